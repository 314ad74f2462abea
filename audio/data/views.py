"""Two views of one descriptor per clip, made a batch at a time, in the data-loader workers or in the training step.

:class:`ContrastiveAudioViews` is indexed by the keys of :class:`core.pretrain.sampler.DescriptorBatchSampler`,
``(index, invariance_id, sample_seed)``. The DataLoader hands a worker the whole batch of keys
(``__getitems__``): each clip's random chunk and both views' factor parameters come from a ``torch.Generator``
seeded with its ``sample_seed``, then the fast path augments the batch at once (pitch and stretch grouped). So a
batch is the same whatever the number of workers, and the views of other descriptors are never computed.

Where the arithmetic runs is a choice (``augment_on``): ``"workers"`` makes the views in the worker processes (the
CPU); ``"step"`` has the workers return only the chunks and the drawn parameters, and
:meth:`ContrastiveAudioViews.prepare_batch` makes the views inside the training step on the training device (the
GPU, where the phase vocoder and the noises are far cheaper than on a worker's core). The draws are the same, so
on one device both placements give the same views; on a GPU the noises come from the GPU's generator (seeded the
same way), so they are other samples of the same distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from audio.augment.fast import augment_batch
from audio.augment.params import AugmentSettings, ViewParams, draw_view_params
from audio.frontend.waveform import random_chunk
from core.invariance import InvarianceSpace


class ClipSource(Protocol):
    """Z-normalised clips at the front end's sample rate: ``len(source)`` and ``source[i]`` -> (samples,)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class ContrastiveAudioViews(Dataset):
    """The audio pre-training dataset: ``{"view0", "view1", "invariance_id"}`` waveforms per key.

    Args:
        clips: Items are z-normalised waveforms of any length (shape (samples,)).
        space: The audio descriptor space (7 factors).
        chunk_samples: Length of the views; a longer clip contributes one random chunk (the last one tiled), a
            shorter one is tiled.
        settings: Factor ranges and ``p``.
        path: ``fast`` (batched, :mod:`audio.augment.fast`) or ``reference`` (per clip, audiomentations and
            torchaudio's Fade, :mod:`audio.augment.reference`).

    Shape:
        view0, view1: (chunk_samples,) each.
    """

    def __init__(self, clips: ClipSource, space: InvarianceSpace, chunk_samples: int,
                 settings: AugmentSettings | None = None, path: Literal["fast", "reference"] = "fast",
                 augment_on: Literal["workers", "step"] = "workers") -> None:
        if space.dim != 7:
            raise ValueError(f"ContrastiveAudioViews needs the 7-factor audio space, got {space!r}")
        if path not in ("fast", "reference"):
            raise ValueError(f"augmentation path must be 'fast' or 'reference', got {path!r}")
        if augment_on not in ("workers", "step"):
            raise ValueError(f"augment_on must be 'workers' or 'step', got {augment_on!r}")
        if augment_on == "step" and path != "fast":
            raise ValueError("augmenting inside the training step needs the fast path (data.augment=fast); the "
                             "reference path runs one clip at a time on the CPU")
        self.clips = clips
        self.space = space
        self.chunk_samples = int(chunk_samples)
        self.settings = settings or AugmentSettings()
        self.path = path
        self.augment_on = augment_on

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor | int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int, int]]) -> list[dict[str, Tensor | int]]:
        for key in keys:
            if not isinstance(key, tuple | list) or len(key) != 3:
                raise TypeError(
                    f"ContrastiveAudioViews is indexed by (index, invariance_id, sample_seed) keys, got {key!r}; "
                    "use core.pretrain.sampler.DescriptorBatchSampler as the DataLoader's batch_sampler."
                )
        waves, params0, params1, ids = [], [], [], []
        for index, invariance_id, seed in ((int(a), int(b), int(c)) for a, b, c in keys):
            generator = torch.Generator().manual_seed(seed)
            waves.append(torch.from_numpy(random_chunk(self.clips[index], self.chunk_samples, generator)))
            invariance = self.space.descriptors[invariance_id]
            params0.append(draw_view_params(invariance, self.chunk_samples, generator, self.settings))
            params1.append(draw_view_params(invariance, self.chunk_samples, generator, self.settings))
            ids.append(invariance_id)
        if self.augment_on == "step":  # the chunk and the draws; the step makes the views on its device
            return [{"wave": w, "invariance_id": i, **_flat("params0", p0), **_flat("params1", p1)}
                    for w, i, p0, p1 in zip(waves, ids, params0, params1, strict=True)]
        batch = torch.stack(waves)  # (B, chunk_samples)
        view0 = self._augment(batch, ViewParams.stack(params0))
        view1 = self._augment(batch, ViewParams.stack(params1))
        return [{"view0": v0, "view1": v1, "invariance_id": i} for v0, v1, i in zip(view0, view1, ids, strict=True)]

    def prepare_batch(self, batch: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
        """The two views of a collated batch on ``device``: moved there if the workers made them, else made there
        from the chunks and the drawn parameters (``augment_on="step"``). The engine's ``prepare_batch`` hook.

        Shape: (B, chunk_samples) each.
        """
        if "view0" in batch:
            return batch["view0"].to(device, non_blocking=True), batch["view1"].to(device, non_blocking=True)
        waves = batch["wave"].to(device, non_blocking=True)  # (B, chunk_samples)
        return tuple(augment_batch(waves, _unflat(prefix, batch), self.settings)  # type: ignore[return-value]
                     for prefix in ("params0", "params1"))

    def _augment(self, batch: Tensor, params: ViewParams) -> Tensor:  # in the workers
        if self.path == "fast":
            return augment_batch(batch, params, self.settings)
        from audio.augment.reference import augment_reference  # audiomentations is imported only when used

        return torch.stack([augment_reference(batch[b], params.example(b), self.settings)
                            for b in range(len(params))])


def _flat(prefix: str, params: ViewParams) -> dict[str, Tensor]:
    """One example's parameters as collatable ``{"prefix.field": tensor}`` (the batch axis of B = 1 dropped)."""
    return {f"{prefix}.{f.name}": getattr(params, f.name)[0] for f in fields(params)}


def _unflat(prefix: str, batch: dict[str, Tensor]) -> ViewParams:
    """The collated parameters of one view (on the CPU, where the fast path reads them)."""
    return ViewParams(**{f.name: batch[f"{prefix}.{f.name}"].cpu() for f in fields(ViewParams)})
