"""Encoders and data shared by the probe, baseline and ridge tests (imported, not collected: no ``test_`` name)."""

import torch
from torch import nn

from core.backbones.hyper_resnet import HyperResNet
from core.downstream.task import TaskData
from core.invariance import InvarianceSpace
from vision.prompt_vit import PromptViT

SPACE = InvarianceSpace(("spatial", "appearance"))
# One sweep configuration and a fast-moving θ: the planted tasks converge in a few epochs.
FAST = {"batch_size": 64, "invariance_lr": 0.05, "lrs": (1e-2,), "weight_decays": (0.0,)}


def make_task(x_train, y_train, x_test, y_test, kind="classification", metric=None, num_outputs=None, name="planted"):
    """A :class:`TaskData`; classes default to ``max(y_train) + 1``, regression outputs to the targets' columns."""
    if num_outputs is None:
        num_outputs = int(y_train.max()) + 1 if kind == "classification" else (y_train.shape[1] if y_train.dim() == 2
                                                                               else 1)
    metric = metric or ("top1" if kind == "classification" else "r2")
    return TaskData(name, kind, metric, num_outputs, x_train, y_train, x_test, y_test)


class PlantedEncoder(nn.Module):
    """Features ``w·signal + (1 - w)·noise`` with ``w = i[0]`` (answer 1) or ``1 - i[0]`` (answer 0).

    Inputs are ``(B, 3, D)``: channel 0 the class signal, channel 1 strong noise, channel 2 a tag (1 on test
    images) that only the call log reads. ``i[1]`` is connected to the output with a zero weight, so its gradient
    is exactly zero. The task is solvable only when ``w → 1``: the probe must move ``i[0]`` to the answer.
    ``scale`` and ``offset`` (per feature dimension: ``offset · (1, 2, ..., D)``) make raw features badly
    conditioned, like pooled ResNet features, without changing what a standardised head can learn.
    """

    def __init__(self, answer: int, dim: int = 8, scale: float = 1.0, offset: float = 0.0) -> None:
        super().__init__()
        self.space = SPACE
        self.num_features = dim
        self.answer = answer
        self.scale = scale
        self.register_buffer("offset", offset * torch.arange(1, dim + 1, dtype=torch.float32))
        self.register_buffer("anchor", torch.zeros(()))
        self.calls: list[tuple[int, int]] = []  # (test rows, all rows) per call

    def forward(self, x: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        self.space.validate(invariance)
        self.calls.append((int(x[:, 2, 0].sum()), x.shape[0]))
        w = invariance[..., :1] if self.answer == 1 else 1 - invariance[..., :1]
        return self.scale * (w * x[:, 0] + (1 - w) * x[:, 1]) + self.offset + 0.0 * invariance.sum()


def planted_data(n, seed, dim=8, num_classes=4, test=False, regression=False):
    """Inputs for :class:`PlantedEncoder` and their labels (or 2-D regression targets around 100)."""
    g = torch.Generator().manual_seed(seed)
    if regression:
        signal = torch.randn(n, dim, generator=g)
        y = signal @ torch.randn(dim, 2, generator=torch.Generator().manual_seed(7)) * 5 + 100  # far from 0
    else:
        means = 1.5 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(7))
        y = torch.randint(num_classes, (n,), generator=g)
        signal = means[y] + 0.3 * torch.randn(n, dim, generator=g)
    noise = 3 * torch.randn(n, dim, generator=g)
    tag = torch.full((n, dim), float(test))
    return torch.stack([signal, noise, tag], dim=1), y  # (n, 3, dim)


def tiny_resnet():
    torch.manual_seed(0)
    return HyperResNet(SPACE, depth=18, width=4, stem_kernel_size=3, stem_stride=1, stem_pool=False, hidden_dim=2)


def tiny_vit():
    torch.manual_seed(0)
    return PromptViT(SPACE, img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_projectors=2,
                     drop_rate=0.5)


def planted_task(n_train, n_test, regression=False, **kwargs):
    """A :class:`PlantedEncoder` task: ``n_train`` training inputs (seed 0), ``n_test`` tagged test inputs (seed 1)."""
    x_train, y_train = planted_data(n_train, 0, regression=regression)
    x_test, y_test = planted_data(n_test, 1, test=True, regression=regression)
    return make_task(x_train, y_train, x_test, y_test, kind="regression" if regression else "classification",
                     **kwargs)


def image_task(n_train, n_test):
    """An :func:`image_data` task: ``n_train`` training images (seed 0), ``n_test`` test images (seed 1)."""
    return make_task(*image_data(n_train, 0), *image_data(n_test, 1))


def image_data(n, seed):
    """Two classes of 8×8 images, class 1 shifted up by one. Shape: (n, 3, 8, 8) and (n,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y
