"""Downstream evaluation of a conditioned encoder: the invariance probe, a faster grid route, and baselines.

- :func:`invariance_probe` (paper [0] §4.2, SPEC §8): the encoder is frozen; a linear head and the descriptor
  ``i = sigmoid(θ)`` (θ = 0, i.e. i = 0.5, at the start) are learned together with Adam, the features being
  recomputed through the frozen encoder at the current ``i`` every step so that the loss reaches θ.
- :func:`grid_refine_probe`: the same answer faster. Score a coarse grid of descriptors with closed-form ridge
  heads on cached features, then refine the best one by gradient descent for a few epochs.
- :func:`linear_probe`: a linear readout at a fixed descriptor on cached features (baseline).
- :func:`finetune`: the last ``k`` stages plus a linear head at a fixed descriptor, optionally stopped after a
  wall-clock budget, e.g. the probe's own time (baseline).

One protocol for all four, which fixes what the authors' downstream code got wrong (official-code-notes §6, §9):

- A validation split carved from the training data (seeded, stratified for classification) selects the epoch
  and the (learning rate, weight decay) pair of a small sweep; epoch 0 (the head before training) is a candidate.
- The test split is encoded only after every choice is made, once per reported descriptor, and no test number
  feeds back into any choice.
- The frozen encoder runs in eval mode (BatchNorm statistics never change, dropout is off) and its parameters do
  not require gradients; its modes and ``requires_grad`` flags are restored afterwards (:func:`frozen`).
- Weight decay (Adam's L2 term) applies to the head only; θ has its own parameter group without decay.
- Metrics come from :mod:`core.metrics`, over the whole split. Regression targets are standardised with the
  training split's statistics for the loss; R² is reported on the original scale.
- Every result (:class:`ProbeResult`) carries its wall time and the number of trained parameters.

Images are a float tensor ``(N, C, H, W)`` already normalised, or any tensor plus a ``transform`` applied to each
batch on the device (e.g. uint8 → normalised float). Only deterministic preprocessing belongs there: the
probes use no augmentation, as in the paper.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.invariance import InvarianceDescriptor, InvarianceSpace, quantize
from core.metrics import compute_metric

TASK_METRICS: dict[str, tuple[str, ...]] = {"classification": ("top1", "mean_per_class"), "regression": ("r2",)}
# Ridge penalties, relative to the mean eigenvalue of the centred Gram matrix (so they do not depend on the
# feature scale); the validation split picks one.
RIDGE_LAMS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# A descriptor that starts the gradient stage is clamped to [0.05, 0.95] before θ = logit(i): at a corner θ would
# be ±inf, and sigmoid'(θ) at 0.95 is still a fifth of its value at the centre.
INIT_CLAMP = 0.05

Transform = Callable[[Tensor], Tensor]
DescriptorLike = InvarianceDescriptor | Tensor | Sequence[float]


@dataclass
class ProbeResult:
    """The outcome of one downstream evaluation; :meth:`to_dict` is JSON-ready.

    Attributes:
        method: ``"invariance_probe"``, ``"grid_refine_probe"``, ``"linear_probe"`` or ``"finetune"``.
        task: ``"classification"`` or ``"regression"``.
        metric: ``"top1"``, ``"mean_per_class"`` or ``"r2"``.
        score: Test score of the selected head at the selected (learned or fixed) descriptor.
        val_score: Validation score that selected it.
        invariance: The descriptor, coordinate ``j`` meaning ``space.names[j]``.
        invariance_by_name: The same, by factor name.
        descriptor: The same, printed (``spatial=0.31 appearance=0.88``).
        wall_time_s: Wall-clock time of the whole call, test evaluation included.
        trained_params: Parameters learned: the head, plus A for a learned descriptor, plus the fine-tuned stages.
        hyperparameters: The selected learning rate, weight decay and epoch, and the fixed settings.
        epochs_run: Training epochs over the whole sweep (an epoch cut short by a time budget counts).
        quantized: ``{b: score}``, the *selected head* evaluated on features at ``Q(i; b)``; shows how much the
            head relies on the exact continuous descriptor.
        quantized_refit: ``{b: score}``, a closed-form ridge head *refitted* on training features at ``Q(i; b)``
            (penalty picked on validation); the score of the quantised descriptor itself.
        stages: Per-stage numbers of :func:`grid_refine_probe` (``"grid"``, ``"refine"``).
        history: One entry per (configuration, epoch): validation score, training loss, descriptor.
        head: The selected head, applied to features (not serialised). Regression heads predict standardised
            targets (see ``hyperparameters["target_mean"]``/``["target_std"]``).
    """

    method: str
    task: str
    metric: str
    score: float
    val_score: float
    invariance: list[float]
    invariance_by_name: dict[str, float]
    descriptor: str
    wall_time_s: float
    trained_params: int
    hyperparameters: dict[str, Any]
    epochs_run: int
    quantized: dict[int, float] = field(default_factory=dict)
    quantized_refit: dict[int, float] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    head: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``json.dump``: every field but ``head``; ``quantized`` keys become strings."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "head"}
        out["quantized"] = {str(b): s for b, s in self.quantized.items()}
        out["quantized_refit"] = {str(b): s for b, s in self.quantized_refit.items()}
        return out


# ---------------------------------------------------------------------------------------------- encoder access
@contextmanager
def frozen(encoder: nn.Module) -> Iterator[nn.Module]:
    """Put ``encoder`` in eval mode with ``requires_grad=False`` everywhere; restore both on exit.

    Gradients still flow *through* the frozen encoder to its inputs (the descriptor), which is what the
    invariance probe needs; BatchNorm uses its running statistics and never updates them.
    """
    modes = [(module, module.training) for module in encoder.modules()]
    flags = [(param, param.requires_grad) for param in encoder.parameters()]
    encoder.eval()
    encoder.requires_grad_(False)
    try:
        yield encoder
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)


def _resolve_device(encoder: nn.Module, device: str | torch.device | None) -> torch.device:
    """The encoder's device; a different requested device is an error (moving it would change the caller's)."""
    tensor = next(itertools.chain(encoder.parameters(), encoder.buffers()), None)
    own = tensor.device if tensor is not None else None
    if device is None:
        return own or torch.device("cpu")
    wanted = torch.device(device)
    if own is not None and (wanted.type != own.type or wanted.index not in (None, own.index)):
        raise ValueError(f"The encoder is on {own} but device={wanted}; move it first: encoder.to({str(wanted)!r}).")
    return own or wanted


def _space(encoder: nn.Module) -> InvarianceSpace:
    space = getattr(encoder, "space", None)
    if not isinstance(space, InvarianceSpace):
        raise ValueError(f"The encoder ({type(encoder).__name__}) needs a `space` attribute (an InvarianceSpace).")
    return space


def _descriptor(space: InvarianceSpace, invariance: DescriptorLike) -> Tensor:
    """A validated ``(A,)`` float tensor from a descriptor, tensor or sequence."""
    return space.descriptor(invariance).tensor()


class _Images:
    """Images on any device, delivered to the encoder's device one batch at a time (through ``transform``)."""

    def __init__(self, images: Tensor, transform: Transform | None, device: torch.device, name: str) -> None:
        if not isinstance(images, Tensor) or images.dim() < 2:
            raise ValueError(f"{name} must be a tensor (N, C, H, W) (any (N, ...) the encoder takes).")
        if transform is None and not images.is_floating_point():
            raise ValueError(f"{name} has dtype {images.dtype}: pass a float tensor or a `transform` that makes one.")
        self.images, self.transform, self.device, self.name = images, transform, device, name

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, rows: Tensor) -> Tensor:
        x = self.images[rows.to(self.images.device)].to(self.device, non_blocking=True)
        return x if self.transform is None else self.transform(x)


def _features(encoder: nn.Module, images: _Images, rows: Tensor, invariance: Tensor) -> Tensor:
    """Encoder features of ``images[rows]``, keeping the graph to ``invariance``. Shape: (len(rows), D)."""
    if invariance.dim() == 2:  # per sample: this batch's rows
        invariance = invariance[rows.to(invariance.device)]
    out = encoder(images.batch(rows), invariance)
    if out.dim() != 2 or out.shape[0] != rows.numel():
        raise ValueError(f"The encoder must return (B, D) features, got {tuple(out.shape)} for {rows.numel()} inputs.")
    return out


@torch.no_grad()
def _features_all(encoder: nn.Module, images: _Images, rows: Tensor, invariance: Tensor, batch_size: int) -> Tensor:
    """No-grad features of ``images[rows]`` in batches. Shape: (len(rows), D)."""
    return torch.cat([_features(encoder, images, chunk, invariance) for chunk in rows.split(batch_size)])


def extract_features(
    encoder: nn.Module,
    images: Tensor,
    invariance: DescriptorLike,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    transform: Transform | None = None,
) -> Tensor:
    """Features of every image at a descriptor, in eval mode under ``no_grad`` (the encoder's modes are restored).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)``, with a ``space`` attribute.
        images: Float images already normalised, or anything ``transform`` turns into them. Shape: (N, C, H, W).
        invariance: One descriptor for all images, shape (A,), or one per image, shape (N, A).
        batch_size: Images per forward pass.
        device: Where to compute; must be the encoder's device (default: the encoder's device).
        transform: Applied to each batch on the device, e.g. uint8 → normalised float.

    Returns:
        Features on ``device``. Shape: (N, D).

    Raises:
        ValueError: On a bad descriptor, images, batch size or device.
    """
    device = _resolve_device(encoder, device)
    space = _space(encoder)
    source = _Images(images, transform, device, "images")
    if isinstance(invariance, Tensor) and invariance.dim() == 2:
        descriptor = space.validate(invariance.detach().float()).to(device)
        if descriptor.shape[0] != len(source):
            raise ValueError(f"extract_features: {descriptor.shape[0]} descriptors for {len(source)} images.")
    else:
        descriptor = _descriptor(space, invariance).to(device)
    if int(batch_size) < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}.")
    with frozen(encoder):
        return _features_all(encoder, source, torch.arange(len(source)), descriptor, int(batch_size))


def split_train_val(
    n: int, val_fraction: float = 0.2, seed: int = 0, labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """A seeded split of ``range(n)`` into training and validation indices.

    With ``labels`` the split is stratified: each class gives ``round(count · val_fraction)`` examples to
    validation, but always keeps at least one for training. Without, ``round(n · val_fraction)`` examples, at
    least one and at most ``n - 1``, go to validation.

    Args:
        n: Number of examples, >= 2.
        val_fraction: Fraction for validation, in (0, 1).
        seed: Seed of the permutation.
        labels: Class labels for a stratified split. Shape: (n,).

    Returns:
        ``(train_idx, val_idx)``, sorted, disjoint, covering ``range(n)``. Shape: (n_train,) and (n_val,).

    Raises:
        ValueError: On ``n < 2``, a fraction outside (0, 1) or labels of the wrong shape.
    """
    if int(n) < 2:
        raise ValueError(f"split_train_val: needs at least 2 examples, got {n}.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"split_train_val: val_fraction must be in (0, 1), got {val_fraction}.")
    generator = torch.Generator().manual_seed(int(seed))
    if labels is None:
        order = torch.randperm(int(n), generator=generator)
        n_val = min(max(round(n * val_fraction), 1), n - 1)
        return order[n_val:].sort().values, order[:n_val].sort().values
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (int(n),):
        raise ValueError(f"split_train_val: labels must have shape ({n},), got {tuple(labels.shape)}.")
    val = []
    for cls in labels.unique():
        members = (labels == cls).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        val.append(members[: min(round(members.numel() * val_fraction), members.numel() - 1)])
    val_idx = torch.cat(val).sort().values
    if val_idx.numel() == 0:
        raise ValueError("split_train_val: no class has enough examples to give one to validation.")
    mask = torch.ones(int(n), dtype=torch.bool)
    mask[val_idx] = False
    return mask.nonzero().squeeze(1), val_idx


# ---------------------------------------------------------------------------------------------- task and data
@dataclass
class _Setup:
    """Everything the four evaluations share: data, split, task encoding and scoring."""

    task: str
    metric: str
    out_dim: int
    num_classes: int | None
    device: torch.device
    space: InvarianceSpace
    train_images: _Images
    test_images: _Images
    y_train: Tensor  # original scale: labels (N,) or targets (N, K), on device
    y_test: Tensor
    y_fit: Tensor  # what the loss sees: labels, or standardised targets
    train_idx: Tensor
    val_idx: Tensor
    target_mean: Tensor | None = None
    target_std: Tensor | None = None

    def loss(self, output: Tensor, rows: Tensor) -> Tensor:
        target = self.y_fit[rows]
        return F.cross_entropy(output, target) if self.task == "classification" else F.mse_loss(output, target)

    def score(self, output: Tensor, target: Tensor) -> float:
        """The metric of head outputs against original-scale targets."""
        if self.task == "regression":
            output = output.double() * self.target_std.double() + self.target_mean.double()
        return compute_metric(self.metric, output, target, self.num_classes)

    def ridge_targets(self, rows: Tensor) -> Tensor:
        target = self.y_fit[rows]
        return F.one_hot(target, self.out_dim).double() if self.task == "classification" else target.double()

    def result_fields(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"val_examples": self.val_idx.numel(), "train_examples": self.train_idx.numel()}
        if self.task == "regression":
            extra["target_mean"] = self.target_mean.tolist()
            extra["target_std"] = self.target_std.tolist()
        return extra


def _setup(encoder: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, task: str,
           metric: str | None, val_fraction: float, seed: int, device: str | torch.device | None,
           transform: Transform | None, num_classes: int | None, batch_size: int) -> _Setup:
    if task not in TASK_METRICS:
        raise ValueError(f"Unknown task {task!r}; expected one of {tuple(TASK_METRICS)}.")
    metric = TASK_METRICS[task][0] if metric is None else metric
    if metric not in TASK_METRICS[task]:
        raise ValueError(f"Metric {metric!r} does not fit task {task!r}; expected one of {TASK_METRICS[task]}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    device = _resolve_device(encoder, device)
    space = _space(encoder)
    train_images = _Images(x_train, transform, device, "x_train")
    test_images = _Images(x_test, transform, device, "x_test")
    y_train, y_test = torch.as_tensor(y_train).to(device), torch.as_tensor(y_test).to(device)
    for name, y, n in (("y_train", y_train, len(train_images)), ("y_test", y_test, len(test_images))):
        if n == 0:
            raise ValueError(f"{name}: the split is empty.")
        if y.shape[:1] != (n,):
            raise ValueError(f"{name} has {tuple(y.shape)[:1]} rows for {n} images.")
    if task == "classification":
        for name, y in (("y_train", y_train), ("y_test", y_test)):
            if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0:
                raise ValueError(f"{name} must hold non-negative integer class labels (N,) for classification.")
        num_classes = int(y_train.max()) + 1 if num_classes is None else int(num_classes)
        if int(y_train.max()) >= num_classes or int(y_test.max()) >= num_classes:
            raise ValueError(f"Labels reach {max(int(y_train.max()), int(y_test.max()))}, outside "
                             f"[0, num_classes={num_classes}); pass num_classes.")
        y_train, y_test = y_train.long(), y_test.long()
        train_idx, val_idx = split_train_val(len(train_images), val_fraction, seed, labels=y_train.cpu())
        return _Setup(task, metric, num_classes, num_classes, device, space, train_images, test_images,
                      y_train, y_test, y_train, train_idx.to(device), val_idx.to(device))
    if y_train.dim() not in (1, 2) or y_test.dim() != y_train.dim():
        raise ValueError(f"Regression targets must be (N,) or (N, K), got {tuple(y_train.shape)} and "
                         f"{tuple(y_test.shape)}.")
    y_train, y_test = y_train.float().reshape(len(y_train), -1), y_test.float().reshape(len(y_test), -1)
    train_idx, val_idx = (i.to(device) for i in split_train_val(len(train_images), val_fraction, seed))
    fit_part = y_train[train_idx]
    mean, std = fit_part.mean(dim=0), fit_part.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant target: only centre it
    return _Setup(task, metric, y_train.shape[1], None, device, space, train_images, test_images, y_train,
                  y_test, (y_train - mean) / std, train_idx, val_idx, mean, std)


# ---------------------------------------------------------------------------------------------- closed-form ridge
def _ridge_path(features: Tensor, targets: Tensor, lams: Sequence[float]) -> list[tuple[Tensor, Tensor]]:
    """Ridge regression ``min ||Xc W - Yc||² + lam·s·||W||²`` for every ``lam``, with an unpenalised intercept.

    ``s`` is the mean eigenvalue of ``Xc^T Xc``, so ``lam`` is scale-free. One eigendecomposition (of the smaller of
    the Gram and the kernel matrix) serves all penalties. Unlike :func:`core.fewshot.ridge_classifier`, it takes
    any targets (one-hot or regression) and returns the weights, so a gradient stage can start from them.

    Args:
        features: Shape: (N, D).
        targets: Shape: (N, K).
        lams: Relative penalties, > 0.

    Returns:
        ``(weight, bias)`` per penalty, float64. Shape: (D, K) and (K,).
    """
    x, y = features.double(), targets.double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean  # (N, D), (N, K)
    n, d = xc.shape
    scale = float(xc.square().sum()) / d or 1.0
    dual = n < d
    gram = xc @ xc.T if dual else xc.T @ xc  # (N, N) or (D, D)
    evals, evecs = torch.linalg.eigh(gram)
    rhs = evecs.T @ (yc if dual else xc.T @ yc)
    path = []
    for lam in lams:
        coef = evecs @ (rhs / (evals.clamp_min(0) + lam * scale).unsqueeze(1))
        weight = xc.T @ coef if dual else coef  # (D, K)
        path.append((weight, y_mean - x_mean @ weight))
    return path


@dataclass
class _RidgeHead:
    weight: Tensor  # (D, K), float64
    bias: Tensor  # (K,)
    lam: float
    val_score: float

    def __call__(self, features: Tensor) -> Tensor:
        return features.double() @ self.weight + self.bias

    def to_linear(self) -> nn.Linear:
        head = nn.Linear(*self.weight.shape, device=self.weight.device)
        with torch.no_grad():
            head.weight.copy_(self.weight.T)
            head.bias.copy_(self.bias)
        return head


def _select_ridge(setup: _Setup, train_features: Tensor, val_features: Tensor, lams: Sequence[float]) -> _RidgeHead:
    """The ridge head whose penalty scores best on validation. Features: (n_train, D) and (n_val, D)."""
    best = None
    for lam, (weight, bias) in zip(lams, _ridge_path(train_features, setup.ridge_targets(setup.train_idx), lams),
                                   strict=True):
        head = _RidgeHead(weight, bias, float(lam), math.nan)
        head.val_score = setup.score(head(val_features), setup.y_train[setup.val_idx])
        if best is None or _better(head.val_score, best.val_score):
            best = head
    return best


def descriptor_grid(dim: int) -> Tensor:
    """The coarse grid of :func:`grid_refine_probe`: corners of ``[0, 1]^A`` plus the centre.

    For ``A <= 4`` all ``2^A`` corners; for larger spaces (``2^A`` feature passes would dominate) the corners
    with at most two active factors, the all-ones corner, and the centre: ``1 + A + A(A-1)/2 + 2`` points
    (18 for the five individual vision factors, 31 for the seven audio ones).

    Returns:
        Corners in ``itertools.product`` order (fewest active first for ``A > 4``), then the centre. Shape: (G, A).
    """
    if int(dim) < 1:
        raise ValueError(f"descriptor_grid: dim must be >= 1, got {dim}.")
    corners = [list(c) for c in itertools.product((0.0, 1.0), repeat=int(dim))]
    if dim > 4:
        corners = sorted((c for c in corners if sum(c) <= 2), key=sum) + [[1.0] * int(dim)]
    return torch.tensor(corners + [[0.5] * int(dim)])


# ---------------------------------------------------------------------------------------------- training loop
def _better(score: float, best: float) -> bool:
    return not math.isnan(score) and (math.isnan(best) or score > best)


@dataclass
class _Run:
    """One (lr, weight decay) configuration: a training step, a validation pass and a snapshot of its state."""

    step: Callable[[Tensor], float]
    validate: Callable[[], float]
    snapshot: Callable[[], dict[str, Any]]
    describe: Callable[[], dict[str, Any]] = dict


@dataclass
class _Sweep:
    val_score: float = math.nan
    state: dict[str, Any] = field(default_factory=dict)
    lr: float = math.nan
    weight_decay: float = math.nan
    epoch: int = 0
    epochs_run: int = 0
    stopped_by_budget: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _sweep(make_run: Callable[[float, float], _Run], lrs: Sequence[float], weight_decays: Sequence[float], *,
           n_train: int, epochs: int, batch_size: int, seed: int, deadline: float | None = None) -> _Sweep:
    """Train every configuration for ``epochs`` and keep the (configuration, epoch) with the best validation score.

    Every configuration sees the same seeded batch order. Epoch 0 (before any step) is a candidate too.
    ``deadline`` (a ``time.perf_counter()`` value) is shared evenly across configurations.
    """
    configs = list(itertools.product(lrs, weight_decays))
    if not configs or any(lr <= 0 for lr in lrs) or any(wd < 0 for wd in weight_decays):
        raise ValueError(f"Need lrs > 0 and weight decays >= 0, at least one each; got {lrs} and {weight_decays}.")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    result, start = _Sweep(), time.perf_counter()
    for k, (lr, wd) in enumerate(configs):
        run = make_run(float(lr), float(wd))
        config_deadline = None if deadline is None else start + (deadline - start) * (k + 1) / len(configs)
        generator = torch.Generator().manual_seed(int(seed))

        def consider(epoch: int, loss: float, run: _Run = run, lr: float = lr, wd: float = wd) -> None:
            score = run.validate()
            result.history.append({"lr": lr, "weight_decay": wd, "epoch": epoch, "val_score": score,
                                   "train_loss": loss, **run.describe()})
            if not result.state or _better(score, result.val_score):  # the first candidate always counts
                result.val_score, result.state, result.lr, result.weight_decay, result.epoch = (
                    score, run.snapshot(), lr, wd, epoch)

        consider(0, math.nan)
        for epoch in range(1, int(epochs) + 1):
            order = torch.randperm(n_train, generator=generator)
            batches = list(order.split(int(batch_size)))
            if len(batches) > 1 and batches[-1].numel() == 1:  # a batch of one breaks train-mode BatchNorm
                batches[-2:] = [torch.cat(batches[-2:])]
            losses = []
            for rows in batches:
                if config_deadline is not None and time.perf_counter() >= config_deadline:
                    result.stopped_by_budget = True
                    break
                losses.append(run.step(rows))
            if losses:
                result.epochs_run += 1
                consider(epoch, sum(losses) / len(losses))
            if result.stopped_by_budget:
                break
    return result


def _head(in_features: int, out_features: int, device: torch.device, init: nn.Linear | None = None) -> nn.Linear:
    """A zero-initialised linear head (a convex problem: no random start needed), or a copy of ``init``."""
    head = nn.Linear(in_features, out_features, device=device)
    with torch.no_grad():
        head.weight.copy_(init.weight) if init is not None else head.weight.zero_()
        head.bias.copy_(init.bias) if init is not None else head.bias.zero_()
    return head


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _head_sweep(setup: _Setup, train_features: Callable[[Tensor, Tensor], Tensor],
                val_features: Callable[[Tensor], Tensor], in_features: int, *, theta0: Tensor | None,
                invariance_lr: float, head_init: nn.Linear | None, lrs: Sequence[float],
                weight_decays: Sequence[float], epochs: int, batch_size: int, seed: int) -> _Sweep:
    """Sweep a linear head (and θ, when ``theta0`` is given) trained with Adam.

    ``train_features(rows, invariance)`` gives features of dataset rows (with the graph to ``invariance``);
    ``val_features(invariance)`` gives no-grad validation features.
    """

    def make_run(lr: float, wd: float) -> _Run:
        head = _head(in_features, setup.out_dim, setup.device, head_init)
        groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": lr, "weight_decay": wd}]
        theta = None
        if theta0 is not None:  # the descriptor's own group: never decayed
            theta = theta0.detach().clone().to(setup.device).requires_grad_(True)
            groups.append({"params": [theta], "lr": invariance_lr, "weight_decay": 0.0})
        optimizer = torch.optim.Adam(groups)

        def invariance() -> Tensor:
            return torch.sigmoid(theta) if theta is not None else torch.empty(0, device=setup.device)

        def step(idx: Tensor) -> float:
            rows = setup.train_idx[idx.to(setup.device)]
            loss = setup.loss(head(train_features(rows, invariance())), rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        @torch.no_grad()
        def validate() -> float:
            return setup.score(head(val_features(invariance())), setup.y_train[setup.val_idx])

        def snapshot() -> dict[str, Any]:
            return {"head": _state(head), "invariance": invariance().detach().clone()}

        def describe() -> dict[str, Any]:
            return {} if theta is None else {"invariance": invariance().tolist()}

        return _Run(step, validate, snapshot, describe)

    n_train = setup.train_idx.numel()
    return _sweep(make_run, lrs, weight_decays, n_train=n_train, epochs=epochs, batch_size=batch_size, seed=seed)


# ---------------------------------------------------------------------------------------------- shared stages
def _num_features(encoder: nn.Module) -> int:
    dim = getattr(encoder, "num_features", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"The encoder ({type(encoder).__name__}) needs an integer `num_features` attribute.")
    return dim


def _check_levels(bits: Sequence[int], ridge_lams: Sequence[float]) -> tuple[int, ...]:
    bits = tuple(int(b) for b in bits)
    if any(b < 1 for b in bits):
        raise ValueError(f"bits must all be >= 1, got {bits}.")
    if not ridge_lams or any(not lam > 0 for lam in ridge_lams):
        raise ValueError(f"ridge_lams must be a non-empty sequence of penalties > 0, got {ridge_lams}.")
    return bits


def _logit(point: Tensor) -> Tensor:
    """θ with ``sigmoid(θ) = point`` after clamping to ``[INIT_CLAMP, 1 - INIT_CLAMP]``. Shape: (A,)."""
    point = point.clamp(INIT_CLAMP, 1 - INIT_CLAMP)
    return torch.log(point) - torch.log1p(-point)


def _learn_descriptor(encoder: nn.Module, setup: _Setup, theta0: Tensor, head_init: nn.Linear | None, *,
                      invariance_lr: float, lrs: Sequence[float], weight_decays: Sequence[float], epochs: int,
                      batch_size: int, seed: int) -> _Sweep:
    """The gradient stage: head and θ by Adam, features through the frozen encoder at ``sigmoid(θ)`` every step."""
    if not invariance_lr > 0:
        raise ValueError(f"invariance_lr must be > 0, got {invariance_lr}.")

    def train_features(rows: Tensor, invariance: Tensor) -> Tensor:
        return _features(encoder, setup.train_images, rows, invariance)

    def val_features(invariance: Tensor) -> Tensor:
        return _features_all(encoder, setup.train_images, setup.val_idx, invariance, batch_size)

    return _head_sweep(setup, train_features, val_features, _num_features(encoder), theta0=theta0,
                       invariance_lr=invariance_lr, head_init=head_init, lrs=lrs, weight_decays=weight_decays,
                       epochs=epochs, batch_size=batch_size, seed=seed)


def _fit_features(encoder: nn.Module, setup: _Setup, invariance: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """No-grad features of the training and validation parts at one descriptor. Shape: (n_train, D), (n_val, D)."""
    rows = torch.cat([setup.train_idx, setup.val_idx])
    features = _features_all(encoder, setup.train_images, rows, invariance.to(setup.device), batch_size)
    return features[: setup.train_idx.numel()], features[setup.train_idx.numel():]


def _test_scores(encoder: nn.Module, setup: _Setup, heads: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]],
                 batch_size: int) -> list[float]:
    """The test phase: encode the test split once per distinct descriptor and score each (descriptor, head).

    Called last, after every choice is made; nothing it computes feeds back into a choice.
    """
    rows = torch.arange(len(setup.test_images), device=setup.device)
    cache: dict[tuple[float, ...], Tensor] = {}
    scores = []
    for invariance, head in heads:
        key = tuple(invariance.tolist())
        if key not in cache:
            cache[key] = _features_all(encoder, setup.test_images, rows, invariance.to(setup.device), batch_size)
        with torch.no_grad():
            scores.append(setup.score(head(cache[key]), setup.y_test))
    return scores


def _result(method: str, setup: _Setup, invariance: Tensor, score: float, val_score: float, start: float,
            trained_params: int, hyperparameters: dict[str, Any], sweep: _Sweep, head: nn.Module,
            **extra: Any) -> ProbeResult:
    descriptor = setup.space.descriptor(invariance.detach().cpu())
    return ProbeResult(
        method=method, task=setup.task, metric=setup.metric, score=score, val_score=val_score,
        invariance=list(descriptor.values), invariance_by_name=descriptor.as_dict(), descriptor=str(descriptor),
        wall_time_s=time.perf_counter() - start, trained_params=int(trained_params),
        hyperparameters={**hyperparameters, "lr": sweep.lr, "weight_decay": sweep.weight_decay,
                         "selected_epoch": sweep.epoch, **setup.result_fields()},
        epochs_run=sweep.epochs_run, history=sweep.history, head=head, **extra,
    )


def _finish_learned(method: str, encoder: nn.Module, setup: _Setup, sweep: _Sweep, *, bits: tuple[int, ...],
                    ridge_lams: Sequence[float], batch_size: int, start: float, hyperparameters: dict[str, Any],
                    extra_tests: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]] = ()) -> tuple[ProbeResult,
                                                                                                   list[float]]:
    """Quantised refits on training data, then the test phase, for a learned descriptor."""
    learned = sweep.state["invariance"]
    head = _head(_num_features(encoder), setup.out_dim, setup.device)
    head.load_state_dict(sweep.state["head"])
    head.eval().requires_grad_(False)
    refits = {}
    for b in bits:
        level = quantize(learned, b)
        refits[b] = (level, _select_ridge(setup, *_fit_features(encoder, setup, level, batch_size), ridge_lams))
    tests = [(learned, head)] + [(quantize(learned, b), head) for b in bits] + [refits[b] for b in bits]
    scores = _test_scores(encoder, setup, tests + list(extra_tests), batch_size)
    quantized = dict(zip(bits, scores[1 : 1 + len(bits)], strict=True))
    refit_scores = dict(zip(bits, scores[1 + len(bits) : 1 + 2 * len(bits)], strict=True))
    hyperparameters = {**hyperparameters, "quantized_refit_lams": {str(b): refits[b][1].lam for b in bits}}
    trained = sum(p.numel() for p in head.parameters()) + setup.space.dim
    result = _result(method, setup, learned, scores[0], sweep.val_score, start, trained, hyperparameters, sweep,
                     head, quantized=quantized, quantized_refit=refit_scores)
    return result, scores[1 + 2 * len(bits):]


# ---------------------------------------------------------------------------------------------- public probes
def invariance_probe(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    task: str = "classification",
    metric: str | None = None,
    epochs: int = 30,
    batch_size: int = 256,
    lrs: Sequence[float] = (1e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4),
    invariance_lr: float = 1e-2,
    val_fraction: float = 0.2,
    seed: int = 0,
    bits: Sequence[int] = (1, 2),
    device: str | torch.device | None = None,
    init: DescriptorLike | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
    ridge_lams: Sequence[float] = RIDGE_LAMS,
) -> ProbeResult:
    """Learn a linear head and the descriptor ``i = sigmoid(θ)`` on a frozen encoder (SPEC §8).

    Each step computes the batch's features through the frozen encoder at the current ``i``, so the loss
    (cross-entropy, or MSE on standardised targets) reaches θ; Adam updates the head (learning rate and weight
    decay from the sweep) and θ (``invariance_lr``, no decay). Adam moves θ by about ``invariance_lr`` per step
    whatever the gradient's scale: from θ = 0, i reaches 0.9 (θ ≈ 2.2) after about 220 steps at the default.
    The validation split picks the epoch and the (lr, weight decay) pair; the selected head and descriptor are
    then scored on the test split, also at ``Q(i; b)`` for each ``b`` in ``bits`` (see
    :attr:`ProbeResult.quantized` and :attr:`ProbeResult.quantized_refit`).

    Args:
        encoder: ``encoder(x, invariance) -> (B, D)`` with ``num_features`` and ``space``; frozen and restored.
        x_train: Training images (validation is carved from them). Shape: (N, C, H, W).
        y_train: Labels (N,) for classification, targets (N,) or (N, K) for regression.
        x_test: Test images. Shape: (M, C, H, W).
        y_test: Test labels or targets. Shape: (M,) or (M, K).
        task: ``"classification"`` or ``"regression"``.
        metric: ``"top1"`` (default) or ``"mean_per_class"`` for classification; ``"r2"`` for regression.
        epochs: Epochs per sweep configuration.
        batch_size: Examples per step (and per no-grad forward pass).
        lrs: Head learning rates to sweep.
        weight_decays: Head weight decays (Adam's L2 term) to sweep.
        invariance_lr: Adam learning rate of θ.
        val_fraction: Part of the training data held out for selection.
        seed: Seed of the split and the batch order.
        bits: Quantisation levels ``b`` to report.
        device: Must be the encoder's device (default: the encoder's device).
        init: Starting descriptor (default 0.5 everywhere, θ = 0); clamped to ``[0.05, 0.95]``.
        transform: Per-batch preprocessing on the device, e.g. uint8 → normalised float.
        num_classes: Classes of the head (default: ``max(y_train) + 1``).
        ridge_lams: Relative ridge penalties for the quantised refits.

    Returns:
        The test score at the learned descriptor, with everything else listed in :class:`ProbeResult`.

    Raises:
        ValueError: On inconsistent data, an unknown task or metric, or bad hyper-parameters.
    """
    start = time.perf_counter()
    setup = _setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric, val_fraction=val_fraction,
                   seed=seed, device=device, transform=transform, num_classes=num_classes, batch_size=batch_size)
    bits = _check_levels(bits, ridge_lams)
    theta0 = torch.zeros(setup.space.dim) if init is None else _logit(_descriptor(setup.space, init))
    with frozen(encoder):
        sweep = _learn_descriptor(encoder, setup, theta0, None, invariance_lr=invariance_lr, lrs=lrs,
                                  weight_decays=weight_decays, epochs=epochs, batch_size=batch_size, seed=seed)
        hyper = {"epochs": epochs, "batch_size": batch_size, "invariance_lr": invariance_lr,
                 "init": torch.sigmoid(theta0).tolist(), "val_fraction": val_fraction, "seed": seed}
        result, _ = _finish_learned("invariance_probe", encoder, setup, sweep, bits=bits, ridge_lams=ridge_lams,
                                    batch_size=batch_size, start=start, hyperparameters=hyper)
    result.wall_time_s = time.perf_counter() - start
    return result


def grid_refine_probe(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    task: str = "classification",
    metric: str | None = None,
    refine_epochs: int = 5,
    batch_size: int = 256,
    lrs: Sequence[float] = (1e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4),
    invariance_lr: float = 1e-2,
    val_fraction: float = 0.2,
    seed: int = 0,
    bits: Sequence[int] = (1, 2),
    device: str | torch.device | None = None,
    grid: Tensor | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
    ridge_lams: Sequence[float] = RIDGE_LAMS,
) -> ProbeResult:
    """A faster route to the invariance probe's answer: a coarse grid on cached features, then a short refinement.

    1. Grid stage: for each descriptor of :func:`descriptor_grid` (or ``grid``), one no-grad feature pass over the
       training data and closed-form ridge heads (one-hot targets for classification), the penalty and the
       descriptor picked on validation.
    2. Refine stage: :func:`invariance_probe`'s gradient descent for ``refine_epochs``, starting from the best
       grid point (θ = logit of the point clamped to ``[0.05, 0.95]``) and from its ridge head. Epoch 0 is a
       candidate, so the refined validation score is at least that of the warm start.

    ``score`` is the refined head at the refined descriptor; ``stages["grid"]["score"]`` the ridge head at the
    best grid point. Both are test scores computed at the end, neither selects anything.

    Args:
        refine_epochs: Epochs of the refine stage per sweep configuration (0 keeps the grid answer).
        grid: Descriptors to score instead of the default grid. Shape: (G, A).
        (others): As in :func:`invariance_probe`.

    Returns:
        :class:`ProbeResult` with ``stages = {"grid": {...}, "refine": {...}}`` (scores, descriptors, wall times).

    Raises:
        ValueError: As :func:`invariance_probe`, or for a grid that is not (G, A) in ``[0, 1]``.
    """
    start = time.perf_counter()
    setup = _setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric, val_fraction=val_fraction,
                   seed=seed, device=device, transform=transform, num_classes=num_classes, batch_size=batch_size)
    bits = _check_levels(bits, ridge_lams)
    points = descriptor_grid(setup.space.dim) if grid is None else torch.as_tensor(grid, dtype=torch.float32)
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"grid_refine_probe: grid must be (G, {setup.space.dim}), got {tuple(points.shape)}.")
    setup.space.validate(points)
    with frozen(encoder):
        grid_start = time.perf_counter()
        best_point, best_ridge, grid_log = None, None, []
        for point in points:
            ridge = _select_ridge(setup, *_fit_features(encoder, setup, point, batch_size), ridge_lams)
            grid_log.append({"invariance": point.tolist(), "val_score": ridge.val_score, "ridge_lam": ridge.lam})
            if best_ridge is None or _better(ridge.val_score, best_ridge.val_score):
                best_point, best_ridge = point, ridge
        grid_time = time.perf_counter() - grid_start

        refine_start = time.perf_counter()
        sweep = _learn_descriptor(encoder, setup, _logit(best_point), best_ridge.to_linear(),
                                  invariance_lr=invariance_lr, lrs=lrs, weight_decays=weight_decays,
                                  epochs=refine_epochs, batch_size=batch_size, seed=seed)
        refine_time = time.perf_counter() - refine_start
        hyper = {"refine_epochs": refine_epochs, "batch_size": batch_size, "invariance_lr": invariance_lr,
                 "grid_points": points.shape[0], "val_fraction": val_fraction, "seed": seed}
        result, (grid_score,) = _finish_learned(
            "grid_refine_probe", encoder, setup, sweep, bits=bits, ridge_lams=ridge_lams, batch_size=batch_size,
            start=start, hyperparameters=hyper, extra_tests=[(best_point, best_ridge)])
    best = setup.space.descriptor(best_point)
    result.stages = {
        "grid": {"score": grid_score, "val_score": best_ridge.val_score, "invariance": list(best.values),
                 "descriptor": str(best), "ridge_lam": best_ridge.lam, "wall_time_s": grid_time, "points": grid_log},
        "refine": {"score": result.score, "val_score": result.val_score, "invariance": result.invariance,
                   "descriptor": result.descriptor, "wall_time_s": refine_time},
    }
    result.wall_time_s = time.perf_counter() - start
    return result


def linear_probe(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    invariance: DescriptorLike,
    *,
    task: str = "classification",
    metric: str | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    lrs: Sequence[float] = (1e-3, 1e-2),
    weight_decays: Sequence[float] = (0.0, 1e-4),
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
) -> ProbeResult:
    """Baseline: a linear head at a fixed descriptor, trained by Adam on cached features.

    One no-grad pass encodes the training data; the head is then trained exactly as in
    :func:`invariance_probe` (same loss, sweep and validation selection) but without θ, so many more epochs
    cost little.

    Args:
        invariance: The fixed descriptor. Shape: (A,).
        epochs: Epochs per sweep configuration (cheap: features are cached).
        (others): As in :func:`invariance_probe`.

    Returns:
        :class:`ProbeResult` (no quantised scores: the descriptor is not learned).
    """
    start = time.perf_counter()
    setup = _setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric, val_fraction=val_fraction,
                   seed=seed, device=device, transform=transform, num_classes=num_classes, batch_size=batch_size)
    descriptor = _descriptor(setup.space, invariance).to(setup.device)
    with frozen(encoder):
        rows = torch.arange(len(setup.train_images), device=setup.device)
        cache = _features_all(encoder, setup.train_images, rows, descriptor, batch_size)  # (N, D)
        sweep = _head_sweep(setup, lambda rows, _: cache[rows], lambda _: cache[setup.val_idx], cache.shape[1],
                            theta0=None, invariance_lr=0.0, head_init=None, lrs=lrs, weight_decays=weight_decays,
                            epochs=epochs, batch_size=batch_size, seed=seed)
        head = _head(cache.shape[1], setup.out_dim, setup.device)
        head.load_state_dict(sweep.state["head"])
        head.eval().requires_grad_(False)
        (score,) = _test_scores(encoder, setup, [(descriptor, head)], batch_size)
    hyper = {"epochs": epochs, "batch_size": batch_size, "val_fraction": val_fraction, "seed": seed}
    trained = sum(p.numel() for p in head.parameters())
    return _result("linear_probe", setup, descriptor, score, sweep.val_score, start, trained, hyper, sweep, head)


def trainable_stages(model: nn.Module, last_k_stages: int) -> list[nn.Module]:
    """The modules :func:`finetune` trains: the last ``k`` ResNet stages, or the last ``k`` ViT blocks + norm.

    A ResNet (``layer1`` … ``layer4``, e.g. :class:`~core.hyper_resnet.HyperResNet`) gives ``layer4``,
    ``layer3``, …; a ViT (``blocks`` and ``norm``, e.g. ``vision.prompt_vit.PromptViT``) gives its last ``k``
    blocks, the final ``norm`` and ``fc_norm`` when it has parameters.

    Raises:
        ValueError: For another architecture, or ``k`` outside ``[1, number of stages]``.
    """
    if all(hasattr(model, f"layer{j}") for j in range(1, 5)):
        stages = [getattr(model, f"layer{j}") for j in range(1, 5)]
        tail: list[nn.Module] = []
    elif isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)) and hasattr(model, "norm"):
        stages = list(model.blocks)
        tail = [m for m in (model.norm, getattr(model, "fc_norm", None))
                if isinstance(m, nn.Module) and any(True for _ in m.parameters())]
    else:
        raise ValueError(f"finetune: {type(model).__name__} has neither layer1..layer4 (ResNet) nor blocks and norm "
                         f"(ViT).")
    if not 1 <= int(last_k_stages) <= len(stages):
        raise ValueError(f"finetune: last_k_stages must be in [1, {len(stages)}], got {last_k_stages}.")
    return stages[len(stages) - int(last_k_stages):] + tail


def finetune(
    encoder: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    invariance: DescriptorLike,
    *,
    task: str = "classification",
    metric: str | None = None,
    last_k_stages: int = 1,
    time_budget_s: float | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lrs: Sequence[float] = (1e-4, 1e-3),
    weight_decays: Sequence[float] = (0.0,),
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    transform: Transform | None = None,
    num_classes: int | None = None,
) -> ProbeResult:
    """Baseline: fine-tune the last ``k`` stages (:func:`trainable_stages`) and a linear head at a fixed descriptor.

    Works on a deep copy per sweep configuration; the caller's encoder is never modified. The rest of the network
    stays frozen in eval mode; the trained stages run in train mode during steps (their BatchNorm statistics
    adapt, dropout is on) and in eval mode for validation and test. One Adam optimiser, with the configuration's
    learning rate and weight decay, covers the stages and the head (hence lower default learning rates than the
    probes). With ``time_budget_s`` (e.g. a probe's ``wall_time_s``, for a same-wall-clock comparison), training
    stops once that much time has passed since the call began, shared evenly among the sweep configurations;
    the test evaluation comes after and counts in ``wall_time_s``.

    Args:
        invariance: The fixed descriptor. Shape: (A,).
        last_k_stages: Stages (ResNet) or blocks (ViT) to train, counted from the end.
        time_budget_s: Wall-clock budget for training, or ``None`` for all ``epochs``.
        epochs: Epochs per sweep configuration.
        lrs: Learning rates of the stages and head.
        weight_decays: Weight decays (Adam's L2 term) of the stages and head.
        (others): As in :func:`invariance_probe`.

    Returns:
        :class:`ProbeResult`; ``trained_params`` counts the stages and the head, ``hyperparameters`` say whether
        the budget stopped training.

    Raises:
        ValueError: For an unsupported architecture, bad ``last_k_stages`` or a negative budget, and as
            :func:`invariance_probe`.
    """
    start = time.perf_counter()
    setup = _setup(encoder, x_train, y_train, x_test, y_test, task=task, metric=metric, val_fraction=val_fraction,
                   seed=seed, device=device, transform=transform, num_classes=num_classes, batch_size=batch_size)
    descriptor = _descriptor(setup.space, invariance).to(setup.device)
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"finetune: time_budget_s must be >= 0 or None, got {time_budget_s}.")
    trainable_stages(encoder, last_k_stages)  # fail before copying anything
    num_features = _num_features(encoder)

    def fresh_copy() -> tuple[nn.Module, list[nn.Module]]:
        model = copy.deepcopy(encoder).eval().requires_grad_(False)
        return model, trainable_stages(model, last_k_stages)

    def make_run(lr: float, wd: float) -> _Run:
        model, stages = fresh_copy()
        for stage in stages:
            stage.requires_grad_(True)
        head = _head(num_features, setup.out_dim, setup.device)
        params = [p for stage in stages for p in stage.parameters()] + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)

        def step(idx: Tensor) -> float:
            rows = setup.train_idx[idx.to(setup.device)]
            for stage in stages:
                stage.train()
            loss = setup.loss(head(_features(model, setup.train_images, rows, descriptor)), rows)
            for stage in stages:
                stage.eval()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        @torch.no_grad()
        def validate() -> float:
            features = _features_all(model, setup.train_images, setup.val_idx, descriptor, batch_size)
            return setup.score(head(features), setup.y_train[setup.val_idx])

        def snapshot() -> dict[str, Any]:
            return {"stages": [_state(stage) for stage in stages], "head": _state(head)}

        return _Run(step, validate, snapshot)

    deadline = None if time_budget_s is None else start + float(time_budget_s)
    sweep = _sweep(make_run, lrs, weight_decays, n_train=setup.train_idx.numel(), epochs=epochs,
                   batch_size=batch_size, seed=seed, deadline=deadline)
    model, stages = fresh_copy()
    for stage, state in zip(stages, sweep.state["stages"], strict=True):
        stage.load_state_dict(state)
    head = _head(num_features, setup.out_dim, setup.device)
    head.load_state_dict(sweep.state["head"])
    head.eval().requires_grad_(False)
    (score,) = _test_scores(model, setup, [(descriptor, head)], batch_size)
    hyper = {"epochs": epochs, "batch_size": batch_size, "last_k_stages": last_k_stages,
             "time_budget_s": time_budget_s, "stopped_by_budget": sweep.stopped_by_budget,
             "val_fraction": val_fraction, "seed": seed}
    trained = sum(p.numel() for stage in stages for p in stage.parameters()) + sum(p.numel() for p in head.parameters())
    return _result("finetune", setup, descriptor, score, sweep.val_score, start, trained, hyper, sweep, head)


__all__ = [
    "INIT_CLAMP",
    "RIDGE_LAMS",
    "TASK_METRICS",
    "ProbeResult",
    "descriptor_grid",
    "extract_features",
    "finetune",
    "frozen",
    "grid_refine_probe",
    "invariance_probe",
    "linear_probe",
    "split_train_val",
    "trainable_stages",
]
