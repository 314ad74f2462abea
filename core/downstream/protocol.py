"""The evaluation protocol every downstream probe and baseline shares: task, split, scoring, test phase, result.

One protocol for :func:`~core.downstream.probe.invariance_probe`, :func:`~core.downstream.probe.grid_refine_probe`,
:func:`~core.downstream.baselines.linear_probe` and :func:`~core.downstream.baselines.finetune`, each reading a
:class:`~core.downstream.task.TaskData` with a :class:`~core.downstream.task.ProbeConfig`:

- A validation split carved from the training data (:func:`split_train_val`: seeded, stratified for
  classification) selects the epoch and the (learning rate, weight decay) pair of a small sweep; epoch 0 (the
  head before training) is a candidate.
- The test split is encoded only after every choice is made, once per reported descriptor
  (:func:`score_test_split`), and no test number feeds back into any choice.
- Metrics come from :mod:`core.downstream.metrics`, over the whole split. Regression targets are standardised with the
  training split's statistics for the loss; R² is reported on the original scale (:class:`ProbeSetup`).
- Every result (:class:`ProbeResult`) carries its wall time and the number of trained parameters.

References:
    - [0] Amortised Invariance Learning for Contrastive Self-Supervision, 2023, https://arxiv.org/abs/2302.12712
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.downstream.features import InputRows, encode_all, encoder_space, resolve_device
from core.downstream.metrics import compute_metric
from core.invariance import InvarianceSpace

if TYPE_CHECKING:  # task.py imports this module's neighbours; the types are only annotations here
    from core.downstream.task import ProbeConfig, TaskData

TASK_METRICS: dict[str, tuple[str, ...]] = {"classification": ("top1", "mean_per_class"), "regression": ("r2",)}


def better(score: float, best: float) -> bool:
    """The selection rule on validation scores: higher wins, NaN never wins, anything beats a NaN best."""
    return not math.isnan(score) and (math.isnan(best) or score > best)


@dataclass
class SweepOutcome:
    """The selected (configuration, epoch) of a :func:`sweep`, its snapshot and the whole history."""

    val_score: float = math.nan
    state: dict[str, Any] = field(default_factory=dict)
    lr: float = math.nan
    weight_decay: float = math.nan
    epoch: int = 0
    epochs_run: int = 0
    stopped_by_budget: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


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
        descriptor: The same, printed (``crop=0.31 color=0.88``).
        wall_time_s: Wall-clock time of the whole call, test evaluation included.
        trained_params: Parameters learned: the head, plus A for a learned descriptor, plus the fine-tuned stages.
        hyperparameters: The selected learning rate, weight decay and epoch, and the fixed settings.
        epochs_run: Training epochs over the whole sweep (an epoch cut short by a time budget counts).
        quantized: ``{b: score}``, the *selected head* evaluated on features at ``Q(i; b)``; shows how much the
            head relies on the exact continuous descriptor.
        quantized_refit: ``{b: score}``, a closed-form ridge head *refitted* on training features at ``Q(i; b)``
            (penalty picked on validation); the score of the quantised descriptor itself.
        score_ci: Bootstrap 95% interval ``[low, high]`` of ``score`` over test examples (seeded by the probe's
            seed; :func:`~core.downstream.bootstrap.bootstrap_ci`), or ``None`` when not computed.
        stages: Per-stage numbers of :func:`~core.downstream.probe.grid_refine_probe` (``"grid"``, ``"refine"``).
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
    score_ci: list[float] | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    head: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``json.dump``: every field but ``head``; ``quantized`` keys become strings."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "head"}
        out["quantized"] = {str(b): s for b, s in self.quantized.items()}
        out["quantized_refit"] = {str(b): s for b, s in self.quantized_refit.items()}
        return out


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


@dataclass
class ProbeSetup:
    """Everything the four evaluations share: data, split, task encoding and scoring (built by :func:`build_setup`)."""

    task: str
    metric: str
    out_dim: int
    num_classes: int | None
    device: torch.device
    space: InvarianceSpace
    train_images: InputRows
    test_images: InputRows
    y_train: Tensor  # original scale: labels (N,) or targets (N, K), on device
    y_test: Tensor
    y_fit: Tensor  # what the loss sees: labels, or standardised targets
    train_idx: Tensor
    val_idx: Tensor
    target_mean: Tensor | None = None
    target_std: Tensor | None = None

    def loss(self, output: Tensor, rows: Tensor) -> Tensor:
        """Cross-entropy, or MSE against standardised targets, of head outputs for dataset ``rows``."""
        target = self.y_fit[rows]
        return F.cross_entropy(output, target) if self.task == "classification" else F.mse_loss(output, target)

    def score(self, output: Tensor, target: Tensor) -> float:
        """The metric of head outputs against original-scale targets."""
        if self.task == "regression":
            output = output.double() * self.target_std.double() + self.target_mean.double()
        return compute_metric(self.metric, output, target, self.num_classes)

    def val_score(self, output: Tensor) -> float:
        """The metric of head outputs for the validation rows, in ``val_idx`` order."""
        return self.score(output, self.y_train[self.val_idx])

    def ridge_targets(self, rows: Tensor) -> Tensor:
        """Targets of a closed-form ridge head: one-hot labels, or standardised targets. Shape: (B, out_dim)."""
        target = self.y_fit[rows]
        return F.one_hot(target, self.out_dim).double() if self.task == "classification" else target.double()

    def result_fields(self) -> dict[str, Any]:
        """Split sizes (and the target standardisation for regression) for ``ProbeResult.hyperparameters``."""
        extra: dict[str, Any] = {"val_examples": self.val_idx.numel(), "train_examples": self.train_idx.numel()}
        if self.task == "regression":
            extra["target_mean"] = self.target_mean.tolist()
            extra["target_std"] = self.target_std.tolist()
        return extra


def build_setup(encoder: nn.Module, task: TaskData, config: ProbeConfig) -> ProbeSetup:
    """Validate a probe's task and settings, carve the validation split and encode the task.

    Uses the task's kind, metric, classes (``num_outputs``) and ``transform``, and the config's
    ``val_fraction``, ``seed``, ``device`` and ``batch_size``.

    Raises:
        ValueError: On an unknown task kind or metric, a bad batch size or device, empty or mismatched splits,
            labels outside ``[0, num_outputs)`` or regression targets that are not (N,) or (N, K).
    """
    kind, metric, num_classes, batch_size = task.kind, task.metric or None, task.num_classes, config.batch_size
    if kind not in TASK_METRICS:
        raise ValueError(f"Unknown task kind {kind!r}; expected one of {tuple(TASK_METRICS)}.")
    metric = TASK_METRICS[kind][0] if metric is None else metric
    if metric not in TASK_METRICS[kind]:
        raise ValueError(f"Metric {metric!r} does not fit task kind {kind!r}; expected one of {TASK_METRICS[kind]}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    device = resolve_device(encoder, config.device)
    space = encoder_space(encoder)
    train_images = InputRows(task.x_train, task.transform, device, "x_train")
    test_images = InputRows(task.x_test, task.transform, device, "x_test")
    y_train, y_test = torch.as_tensor(task.y_train).to(device), torch.as_tensor(task.y_test).to(device)
    for name, y, n in (("y_train", y_train, len(train_images)), ("y_test", y_test, len(test_images))):
        if n == 0:
            raise ValueError(f"{name}: the split is empty.")
        if y.shape[:1] != (n,):
            raise ValueError(f"{name} has {tuple(y.shape)[:1]} rows for {n} images.")
    if kind == "classification":
        for name, y in (("y_train", y_train), ("y_test", y_test)):
            if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0:
                raise ValueError(f"{name} must hold non-negative integer class labels (N,) for classification.")
        num_classes = int(y_train.max()) + 1 if num_classes is None else int(num_classes)
        if int(y_train.max()) >= num_classes or int(y_test.max()) >= num_classes:
            raise ValueError(f"Labels reach {max(int(y_train.max()), int(y_test.max()))}, outside "
                             f"[0, num_classes={num_classes}); the task's num_outputs must cover every label.")
        y_train, y_test = y_train.long(), y_test.long()
        train_idx, val_idx = split_train_val(len(train_images), config.val_fraction, config.seed, labels=y_train.cpu())
        return ProbeSetup(kind, metric, num_classes, num_classes, device, space, train_images, test_images,
                          y_train, y_test, y_train, train_idx.to(device), val_idx.to(device))
    if y_train.dim() not in (1, 2) or y_test.dim() != y_train.dim():
        raise ValueError(f"Regression targets must be (N,) or (N, K), got {tuple(y_train.shape)} and "
                         f"{tuple(y_test.shape)}.")
    y_train, y_test = y_train.float().reshape(len(y_train), -1), y_test.float().reshape(len(y_test), -1)
    train_idx, val_idx = (i.to(device) for i in split_train_val(len(train_images), config.val_fraction, config.seed))
    fit_part = y_train[train_idx]
    mean, std = fit_part.mean(dim=0), fit_part.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant target: only centre it
    return ProbeSetup(kind, metric, y_train.shape[1], None, device, space, train_images, test_images, y_train,
                      y_test, (y_train - mean) / std, train_idx, val_idx, mean, std)


def test_outputs(encoder: nn.Module, setup: ProbeSetup, heads: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]],
                 batch_size: int) -> list[Tensor]:
    """The test phase: encode the test split once per distinct descriptor; each (descriptor, head)'s outputs.

    Called last, after every choice is made; nothing it computes feeds back into a choice. Outputs are the
    heads' own (standardised targets for regression: :meth:`ProbeSetup.score` undoes that). Shape: (M, out_dim) each.
    """
    rows = torch.arange(len(setup.test_images), device=setup.device)
    cache: dict[tuple[float, ...], Tensor] = {}
    outputs = []
    for invariance, head in heads:
        key = tuple(invariance.tolist())
        if key not in cache:
            cache[key] = encode_all(encoder, setup.test_images, rows, invariance.to(setup.device), batch_size)
        with torch.no_grad():
            outputs.append(head(cache[key]))
    return outputs


def score_test_split(encoder: nn.Module, setup: ProbeSetup, heads: Sequence[tuple[Tensor, Callable[[Tensor], Tensor]]],
                batch_size: int) -> list[float]:
    """The test phase (:func:`test_outputs`), scored: one test score per (descriptor, head)."""
    return [setup.score(output, setup.y_test) for output in test_outputs(encoder, setup, heads, batch_size)]


def make_result(method: str, setup: ProbeSetup, invariance: Tensor, score: float, val_score: float, start: float,
                trained_params: int, hyperparameters: dict[str, Any], sweep: SweepOutcome, head: nn.Module,
                **extra: Any) -> ProbeResult:
    """A :class:`ProbeResult` from the selected sweep outcome; ``wall_time_s`` counts from ``start``."""
    descriptor = setup.space.descriptor(invariance.detach().cpu())
    return ProbeResult(
        method=method, task=setup.task, metric=setup.metric, score=score, val_score=val_score,
        invariance=list(descriptor.values), invariance_by_name=descriptor.as_dict(), descriptor=str(descriptor),
        wall_time_s=time.perf_counter() - start, trained_params=int(trained_params),
        hyperparameters={**hyperparameters, "lr": sweep.lr, "weight_decay": sweep.weight_decay,
                         "selected_epoch": sweep.epoch, **setup.result_fields()},
        epochs_run=sweep.epochs_run, history=sweep.history, head=head, **extra,
    )


__all__ = [
    "TASK_METRICS",
    "ProbeResult",
    "ProbeSetup",
    "SweepOutcome",
    "better",
    "build_setup",
    "make_result",
    "score_test_split",
    "split_train_val",
    "test_outputs",
]
