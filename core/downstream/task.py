"""A downstream task and the settings of the probes that evaluate an encoder on it.

- :class:`TaskData`: one labelled task, modality-free: training and test inputs (anything indexed like an
  ``(N, ...)`` tensor: images ``(N, C, H, W)``, waveforms ``(N, samples)``, or a lazy store that reads rows on
  access, :class:`LazyRows`), labels or regression targets, the metric, and how the split was made.
- :class:`ProbeConfig`: the hyper-parameters of :func:`~core.downstream.probe.invariance_probe`,
  :func:`~core.downstream.probe.grid_refine_probe`, :func:`~core.downstream.baselines.linear_probe` and
  :func:`~core.downstream.baselines.finetune`. Each probe has its own defaults (:meth:`ProbeConfig.invariance`,
  :meth:`~ProbeConfig.grid_refine`, :meth:`~ProbeConfig.linear`, :meth:`~ProbeConfig.finetune`); a probe called
  without a config uses its own.

The modalities build tasks (``vision.tasks``, ``audio.tasks``); the probes and the evaluation driver
(:mod:`core.downstream.evaluate`) only read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from core.downstream.bootstrap import BOOTSTRAP_SAMPLES
from core.downstream.ridge import RIDGE_LAMS

#: Defaults of the invariance probe, from ``benchmarks/probe_convergence.py`` and ``benchmarks/README.md``: on
#: standardised features one head configuration suffices; θ needs a learning rate ten times the head's to leave 0.5
#: within a few epochs (at 1e-2 it moved 0.01 per step, Adam's cap, on every task); a head lr of 5e-2 sent i the
#: wrong way on mirror; at 10 and 20 epochs mirror was still improving and below grid + refine, at 30 every
#: synthetic task is within grid + refine's bootstrap interval.
PROBE_EPOCHS = 30
PROBE_LRS = (1e-2,)
PROBE_WEIGHT_DECAYS = (0.0,)
PROBE_INVARIANCE_LR = 0.1
PROBE_HEAD_INIT = "zero"


@runtime_checkable
class LazyRows(Protocol):
    """Anything indexed like an ``(N, ...)`` tensor: a tensor itself, or a store that reads rows on access.

    :class:`core.downstream.features.InputRows` reads inputs only through these members, so a dataset kept on disk
    reaches the encoder one batch at a time and never sits in memory whole.
    """

    @property
    def shape(self) -> torch.Size | tuple[int, ...]:
        """``(N, ...)``: N rows, each shaped like one encoder input."""

    @property
    def device(self) -> torch.device:
        """Where ``self[rows]`` puts its rows (the index tensor is moved there first)."""

    def dim(self) -> int:
        """Number of axes, batch axis included."""

    def is_floating_point(self) -> bool:
        """Whether rows come as floats (if not, the task needs a ``transform``)."""

    def __getitem__(self, rows: Tensor) -> Tensor:
        """The rows ``rows`` (a long tensor of row indices). Shape: (len(rows), ...)."""


@dataclass
class TaskData:
    """A downstream task: inputs, labels and how to score them.

    Attributes:
        name: Task spec, e.g. ``synthetic:shape`` or ``esc50:/data/ESC-50``.
        kind: ``classification`` or ``regression``.
        metric: ``top1``, ``mean_per_class`` (classification) or ``r2`` (regression).
        num_outputs: Classes, or regression outputs.
        x_train: Training inputs (validation is carved from them). Shape: (N, ...).
        y_train: Labels, shape (N,) long; or targets, shape (N,) or (N, num_outputs) float.
        x_test: Test inputs, touched once. Shape: (M, ...).
        y_test: Shape: (M,) or (M, num_outputs).
        protocol: The split rule that made train and test.
        fewshot: Whether the task is evaluated with few-shot episodes (the paper's few-shot benchmarks).
        transform: Deterministic per-batch preprocessing on the encoder's device (e.g. uint8 → normalised float),
            or ``None`` when the inputs are what the encoder takes.
    """

    name: str
    kind: str
    metric: str
    num_outputs: int
    x_train: LazyRows
    y_train: Tensor
    x_test: LazyRows
    y_test: Tensor
    protocol: str = ""
    fewshot: bool = False
    transform: Callable[[Tensor], Tensor] | None = None

    @property
    def num_classes(self) -> int | None:
        """Classes of a classification task (``num_outputs``), ``None`` for regression."""
        return int(self.num_outputs) if self.kind == "classification" else None

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class ProbeConfig:
    """Hyper-parameters of the downstream probes; build one with the probe's own classmethod.

    ``ProbeConfig()`` (= :meth:`invariance`) holds the invariance probe's defaults. Fields a probe does not use
    are ignored by it (the epoch count of grid + refine is ``refine_epochs``; ``standardize``, ``head_init`` and
    ``init`` belong to the invariance probe; ``last_k_stages``, ``time_budget_s`` and ``plain`` to fine-tuning).

    Attributes:
        epochs: Epochs per sweep configuration (invariance probe, linear readout, fine-tuning).
        batch_size: Examples per step and per no-grad forward pass.
        lrs: Head learning rates to sweep (fine-tuning: of the stages and the head).
        weight_decays: Head weight decays (Adam's L2 term) to sweep; never on θ.
        invariance_lr: Adam learning rate of θ (``i = sigmoid(θ)``): Adam moves θ by at most about this much per
            step whatever the gradient's scale, so it sets how fast i can leave 0.5.
        standardize: Invariance probe: train the head on standardised features (``False``: raw features).
        head_init: Invariance probe: ``"zero"`` head, or ``"ridge"``, a closed-form ridge head at the starting
            descriptor (one no-grad feature pass; penalty picked on validation).
        val_fraction: Part of the training data held out for selection.
        seed: Seed of the split, the batch order and the bootstrap.
        bits: Quantisation levels ``b`` reported for a learned descriptor (the paper's Table 9 uses 1, 2 and 3).
        init: Invariance probe: starting descriptor (default 0.5 everywhere, θ = 0), clamped to ``[0.05, 0.95]``.
        ridge_lams: Relative ridge penalties (grid points, warm starts and quantised refits).
        bootstrap: Resamples of the test score's bootstrap interval (0: none).
        progress: A tqdm bar over (configuration, epoch); ``None`` shows it only on a terminal.
        device: Must be the encoder's device (``None``: the encoder's).
        refine_epochs: Grid + refine: gradient epochs after the grid per sweep configuration (0 keeps the grid's).
        grid: Grid + refine: descriptors to score instead of the default grid. Shape: (G, A).
        last_k_stages: Fine-tuning: stages (ResNet) or blocks (ViT) trained, counted from the end.
        time_budget_s: Fine-tuning: wall-clock budget of training, or ``None`` for all ``epochs``.
        plain: Fine-tuning: train the plain network at the descriptor rather than the kernel generators.

    Raises:
        ValueError: On a bad batch size, ``bits``, ``ridge_lams``, ``bootstrap``, ``head_init`` or
            ``invariance_lr``.
    """

    epochs: int = PROBE_EPOCHS
    batch_size: int = 256
    lrs: tuple[float, ...] = PROBE_LRS
    weight_decays: tuple[float, ...] = PROBE_WEIGHT_DECAYS
    invariance_lr: float = PROBE_INVARIANCE_LR
    standardize: bool = True
    head_init: str = PROBE_HEAD_INIT
    val_fraction: float = 0.2
    seed: int = 0
    bits: tuple[int, ...] = (1, 2, 3)
    init: tuple[float, ...] | None = None
    ridge_lams: tuple[float, ...] = RIDGE_LAMS
    bootstrap: int = BOOTSTRAP_SAMPLES
    progress: bool | None = None
    device: str | torch.device | None = None
    refine_epochs: int = 5
    grid: Tensor | None = field(default=None, compare=False)
    last_k_stages: int = 1
    time_budget_s: float | None = None
    plain: bool = True

    def __post_init__(self) -> None:
        as_list = {"lrs": _floats(self.lrs), "weight_decays": _floats(self.weight_decays),
                   "ridge_lams": _floats(self.ridge_lams), "bits": tuple(int(b) for b in self.bits)}
        if self.init is not None:
            init = self.init.tolist() if isinstance(self.init, Tensor) else getattr(self.init, "values", self.init)
            as_list["init"] = _floats(init)
        for name, value in as_list.items():
            object.__setattr__(self, name, value)  # lists from a config file become tuples: frozen and hashable
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if any(b < 1 for b in self.bits):
            raise ValueError(f"bits must all be >= 1, got {self.bits}.")
        if not self.ridge_lams or any(not lam > 0 for lam in self.ridge_lams):
            raise ValueError(f"ridge_lams must be a non-empty sequence of penalties > 0, got {self.ridge_lams}.")
        if int(self.bootstrap) < 0:
            raise ValueError(f"bootstrap must be >= 0 resamples (0: no interval), got {self.bootstrap}.")
        if self.head_init not in ("ridge", "zero"):
            raise ValueError(f"head_init must be 'ridge' or 'zero', got {self.head_init!r}.")
        if not self.invariance_lr > 0:
            raise ValueError(f"invariance_lr must be > 0, got {self.invariance_lr}.")

    def replace(self, **changes: Any) -> ProbeConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def invariance(cls, **changes: Any) -> ProbeConfig:
        """Defaults of :func:`~core.downstream.probe.invariance_probe`: the ``PROBE_*`` constants above,
        standardised features, a zero head, batch 256, bits (1, 2, 3)."""
        return cls(**changes)

    @classmethod
    def grid_refine(cls, **changes: Any) -> ProbeConfig:
        """Defaults of :func:`~core.downstream.probe.grid_refine_probe`: 5 refine epochs on raw features, lrs
        (1e-3, 1e-2), weight decays (0, 1e-4), θ at lr 1e-2."""
        return cls(**{"lrs": (1e-3, 1e-2), "weight_decays": (0.0, 1e-4), "invariance_lr": 1e-2, **changes})

    @classmethod
    def linear(cls, **changes: Any) -> ProbeConfig:
        """Defaults of :func:`~core.downstream.baselines.linear_probe`: 100 epochs on cached features, lrs
        (1e-3, 1e-2), weight decays (0, 1e-4)."""
        return cls(**{"epochs": 100, "lrs": (1e-3, 1e-2), "weight_decays": (0.0, 1e-4), **changes})

    @classmethod
    def finetune(cls, **changes: Any) -> ProbeConfig:
        """Defaults of :func:`~core.downstream.baselines.finetune`: 10 epochs, lrs (1e-4, 1e-3), no weight decay,
        the last stage of the plain network."""
        return cls(**{"epochs": 10, "lrs": (1e-4, 1e-3), "weight_decays": (0.0,), **changes})


__all__ = [
    "PROBE_EPOCHS",
    "PROBE_HEAD_INIT",
    "PROBE_INVARIANCE_LR",
    "PROBE_LRS",
    "PROBE_WEIGHT_DECAYS",
    "LazyRows",
    "ProbeConfig",
    "TaskData",
]
