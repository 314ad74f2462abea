"""Prompt-ViT: a timm Vision Transformer conditioned by one invariance prompt token.

The token from :class:`~core.conditioning.prompt.InvariancePrompt` is appended after ``[CLS, patches] + pos_embed``,
gets no
position embedding, and passes through every block; the feature is the CLS output (paper, A.1.2). Patch dropout
acts on the patches before the token is appended, so it never drops the prompt. The plain baseline
(``conditioned=False``) validates and then ignores the descriptor: it is exactly timm's ViT, which is how the
equivalence is tested. A conditioned model called without a descriptor is an error, never a silent plain ViT.

Pretrained weights come from a local file (:func:`load_vit_checkpoint`): a timm state dict or a MoCo-v3
checkpoint (``state_dict`` with ``module.base_encoder.`` keys). Unlike the authors' code, nothing is
re-initialised after loading (their patch embedding was overwritten), and constructors never touch the disk.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
    - [1] An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from core.conditioning.prompt import InvariancePrompt
from core.invariance import InvarianceSpace


class PromptViT(VisionTransformer):
    """timm ``VisionTransformer`` with an invariance prompt token; ``forward(x, invariance)``.

    Args:
        space: The invariance space (A = ``space.dim``).
        num_projectors: Projectors averaged into the token (paper: 256).
        prompt_hidden_dim: Projector hidden width (paper: ``embed_dim``).
        conditioned: ``False`` builds the plain ViT baseline (no prompt; the descriptor is ignored).
        **kwargs: timm ``VisionTransformer`` arguments (``img_size``, ``patch_size``, ``embed_dim``, ``depth``,
            ``num_heads``, ``num_classes`` ...). The pooled feature is always the CLS token.
    """

    def __init__(self, space: InvarianceSpace, num_projectors: int = 256, prompt_hidden_dim: int | None = None,
                 conditioned: bool = True, **kwargs) -> None:
        kwargs.setdefault("num_classes", 0)
        super().__init__(global_pool="token", **kwargs)
        self.space = space
        self.conditioned = conditioned
        self.prompt = (
            InvariancePrompt(space.dim, self.embed_dim, num_projectors, prompt_hidden_dim) if conditioned else None
        )

    def forward_features(self, x: Tensor, invariance: Tensor) -> Tensor:  # type: ignore[override]
        """Tokens after the final norm.

        Args:
            x: Shape: (B, C, H, W).
            invariance: (A,) for the batch or (B, A) per sample; the plain baseline validates and ignores it.

        Returns:
            Shape: (B, N, D), N = 1 + kept patches (+ 1 prompt token).

        Raises:
            ValueError: If ``invariance`` is missing or does not fit the space.
        """
        if invariance is None:
            raise ValueError(f"PromptViT needs an invariance descriptor of {self.space!r}, shape (A,) or (B, A); "
                             "got None.")
        self.space.validate(invariance)
        x = self.patch_embed(x)
        x = self._pos_embed(x)  # (B, 1 + patches, D), position embedding added
        x = self.patch_drop(x)  # before the prompt is appended: patch dropout never drops it
        if self.prompt is not None:
            token = self.prompt(invariance.to(x.dtype))  # (1 or B, D)
            token = token.unsqueeze(1).expand(x.shape[0], -1, -1)  # (B, 1, D), no position embedding
            x = torch.cat([x, token], dim=1)  # (B, N, D)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x)

    def forward(self, x: Tensor, invariance: Tensor) -> Tensor:  # type: ignore[override]
        """Shape: (B, C, H, W), (A,) or (B, A) -> (B, num_classes or embed_dim)."""
        return self.forward_head(self.forward_features(x, invariance))

    def stages(self) -> list[nn.Module]:
        """The transformer blocks, input to output; the last one carries the final norms (fine-tuning's unit)."""
        tail = [m for m in (self.norm, self.fc_norm) if any(True for _ in m.parameters())]
        blocks = list(self.blocks)
        return [*blocks[:-1], nn.ModuleList([blocks[-1], *tail])]


def load_vit_checkpoint(model: VisionTransformer, path: str | Path) -> list[str]:
    """Load a local timm or MoCo-v3 ViT checkpoint into ``model`` (heads and prompt are left as they are).

    Returns:
        The model keys the checkpoint did not provide (the prompt's, typically).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the checkpoint has keys the model lacks or shapes differ.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ViT checkpoint not found: {path} (weights are never downloaded).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state))
    prefix = "module.base_encoder."
    if any(k.startswith(prefix) for k in state):  # MoCo-v3: keep the base encoder only
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("head")}
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    if unexpected or wrong:
        raise ValueError(
            f"ViT checkpoint {path} does not fit the model: unexpected keys {unexpected[:5]}, shapes {wrong[:5]}."
        )
    model.load_state_dict(state, strict=False)
    return [k for k in own if k not in state]


_VIT_SIZES = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


def _vit(size: str, space: InvarianceSpace, conditioned: bool, image_size: int = 224, patch_size: int = 16,
         checkpoint: str | Path | None = None, **kwargs) -> PromptViT:
    arch = {**_VIT_SIZES[size], **kwargs}
    model = PromptViT(space, conditioned=conditioned, img_size=image_size, patch_size=patch_size, **arch)
    if checkpoint is not None:
        load_vit_checkpoint(model, checkpoint)
    return model


def prompt_vit_tiny(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Prompt-ViT-Tiny (192 wide, 12 blocks); ``checkpoint=PATH`` loads local weights."""
    return _vit("tiny", space, True, **kwargs)


def prompt_vit_small(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Prompt-ViT-Small (384 wide, 12 blocks); ``checkpoint=PATH`` loads local weights."""
    return _vit("small", space, True, **kwargs)


def prompt_vit_base(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Prompt-ViT-Base (768 wide, 12 blocks), the paper's model; ``checkpoint=PATH`` loads local weights."""
    return _vit("base", space, True, **kwargs)


def vit_tiny(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Plain ViT-Tiny baseline (no prompt)."""
    return _vit("tiny", space, False, **kwargs)


def vit_small(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Plain ViT-Small baseline (no prompt)."""
    return _vit("small", space, False, **kwargs)


def vit_base(space: InvarianceSpace, **kwargs) -> PromptViT:
    """Plain ViT-Base baseline (no prompt)."""
    return _vit("base", space, False, **kwargs)
