"""The audio encoder: log-mel front end with its saved statistics, then a (Hyper-)ResNet on the spectrogram.

``encoder(x, invariance)`` takes either waveforms at the front end's sample rate, shape ``(B, samples)`` or
``(B, 1, samples)`` (z-normalised per clip, as :mod:`audio.frontend.waveform` prepares them), or log-mel
spectrograms in dB as :meth:`AudioEncoder.spectrogram` returns them, shape ``(B, 1, n_mels, frames)``. Both are
normalised with the scalar mean/std of the pre-training data, which are buffers of the front end and so travel in
every checkpoint: ``core.load_encoder`` gives back an encoder that normalises exactly as in training.
"""

from __future__ import annotations

from torch import Tensor, nn

from audio.frontend.logmel import LogMel
from core.invariance import InvarianceSpace


class AudioEncoder(nn.Module):
    """Front end + backbone with the ``model(x, invariance)`` signature of every backbone.

    Args:
        space: The invariance space (the backbone's).
        backbone: A spectrogram network called as ``backbone(x, invariance)`` with ``num_features``.
        frontend: The log-mel front end holding the normalisation statistics.

    Shape:
        x: (B, samples), (B, 1, samples) or (B, 1, n_mels, frames); invariance: (A,) or (B, A) -> (B, num_features).
    """

    def __init__(self, space: InvarianceSpace, backbone: nn.Module, frontend: LogMel) -> None:
        super().__init__()
        self.space = space
        self.frontend = frontend
        self.backbone = backbone
        self.num_features = backbone.num_features

    def stages(self) -> list[nn.Module]:
        """The backbone's residual stages, input to output."""
        return self.backbone.stages()

    def spectrogram(self, wave: Tensor) -> Tensor:
        """Log-mel in dB, before normalisation. Shape: (B, samples) -> (B, 1, n_mels, frames)."""
        return self.frontend(wave)

    def forward(self, x: Tensor, invariance: Tensor) -> Tensor:
        if x.ndim == 4:
            if x.shape[1] != 1 or x.shape[2] != self.frontend.n_mels:
                raise ValueError(f"AudioEncoder expects spectrograms of shape (B, 1, {self.frontend.n_mels}, frames), "
                                 f"got {tuple(x.shape)}")
            spec = x
        elif x.ndim in (2, 3):
            spec = self.frontend(x)  # (B, 1, n_mels, frames)
        else:
            raise ValueError(f"AudioEncoder expects waveforms (B, samples) or (B, 1, samples), or spectrograms "
                             f"(B, 1, n_mels, frames); got shape {tuple(x.shape)}")
        return self.backbone(self.frontend.normalise(spec), invariance)
