"""The encoders the invariance benchmark pre-trains, per modality: the amortised model, its baselines, its controls.

Every recipe is the modality's pre-training entry point (``python -m vision.pretrain`` / ``python -m
audio.pretrain``) with the benchmark's shared budget (steps, batch, seed) plus the recipe's own flags, so a recipe
changes one thing against the amortised default:

Every network is ResNet18-shaped at first-stage width :data:`WIDTH` (16; the library's CPU default is 32), so the
whole benchmark fits about two hours of a 2-core CPU.

- ``amortised``: Hyper-ResNet18 (width 16, generator width 8), every training descriptor of the space sampled per
  step (vision: the 3 of ``vision_groups``; audio: the 120 of the seven CLAR factors).
- baselines: the plain ResNet18 with the same layers on one fixed descriptor. Vision: default (both
  groups), appearance only, spatial only. Audio: default (all seven factors) and two disjoint subsets, the
  spectral factors (pitch shift, white and mixed noise: keeps onsets) and the temporal ones (fade, time mask,
  time shift, time stretch: keeps pitch).
- controls:
  - ``plain_mix``: the plain ResNet18 trained on the amortised model's per-step mix of descriptors (the same views,
    no conditioning): separates the conditioning from the augmentation mix;
  - ``plain_wide``: the plain default widened to about the amortised model's parameter count (width 48: 6.29 M
    against 6.28 M for vision): separates the conditioning from capacity;
  - ``plain_default_2x``: the plain default with twice the steps, the compute of ``amortised_from_plain``;
  - not run by default (``--encoders`` names them): ``amortised_g2``, the amortised model at generator width 2
    (close to the plain model's size), and ``amortised_steps``, the amortised model with 3x the steps (vision:
    each of its 3 descriptors gets a plain run's steps; audio: far from the 120x that would).
- levers beyond the paper (role ``lever``), each against the amortised default:
  - ``amortised_mixed``: the amortised model with several descriptors per step (``--run.descriptors_per_step``),
    same steps and batch. Vision: 32 groups, so every step covers the 3 descriptors about equally (a third of the
    batch each, through its own projection head); audio: 16 groups, 16 distinct descriptors of the 120 per step
    (two clips each at batch 32, one at the quick budget's 16), 16x the descriptor-steps of the default;
  - ``amortised_from_plain``: the amortised model started from the same seed's ``plain_default`` run
    (``--init.from``; every descriptor begins with the plain encoder's features), then the benchmark's steps: the
    plain run's steps plus as many again, the compute of ``plain_default_2x``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Audio's disjoint factor subsets of the baselines (together they cover the seven CLAR factors).
AUDIO_SPECTRAL = ("pitch_shift", "white_noise", "mixed_noise")
AUDIO_TEMPORAL = ("fade", "time_mask", "time_shift", "time_stretch")
#: First-stage width of every network of the benchmark.
WIDTH = 16
#: Width of the plain network matched to the amortised model's parameters (width 16, generator width 8: 6.28 M for
#: vision): plain ResNet18 parameters grow with width², 0.70 M x (48 / 16)² = 6.3 M.
WIDE_WIDTH = 48
#: ``--run.descriptors_per_step`` of ``amortised_mixed``; each divides both budgets' batches (vision 64 and 32,
#: audio 32 and 16).
MIXED_GROUPS = {"vision": 32, "audio": 16}


@dataclass(frozen=True)
class Recipe:
    """One encoder of the benchmark.

    Attributes:
        name: Column name in the report.
        role: ``amortised``, ``baseline`` or ``control``.
        flags: Extra command-line flags of the pre-training entry point.
        conditioned: Whether the encoder takes the descriptor (probed), or ignores it (one fixed readout).
        steps_factor: Steps as a multiple of the benchmark's budget.
        default: Whether the benchmark runs it when ``--encoders`` is not given.
        description: One line for the report.
        init_from: The recipe whose run of the same seed starts this encoder (``--init.from``); it is pre-trained
            first.
    """

    name: str
    role: str
    flags: tuple[str, ...]
    conditioned: bool
    description: str
    steps_factor: int = 1
    init_from: str | None = None
    default: bool = True

    def pretrain_flags(self) -> tuple[str, ...]:
        """The recipe's flags, with the benchmark's :data:`WIDTH` unless the recipe sets its own."""
        return self.flags if "--model.width" in self.flags else ("--model.width", str(WIDTH), *self.flags)


def _plain(*flags: str) -> tuple[str, ...]:
    return ("--model.backbone", "resnet18", *flags)


def _controls(default: str, default_text: str, steps_text: str) -> tuple[Recipe, ...]:
    """The four controls; ``default`` is the modality's default ``fixed_descriptor``."""
    return (
        Recipe("plain_mix", "control", _plain(), False, "ResNet18 on the amortised model's per-step descriptor mix"),
        Recipe("plain_wide", "control", _plain("--model.fixed_descriptor", default, "--model.width", str(WIDE_WIDTH)),
               False, f"ResNet18 width {WIDE_WIDTH} (parameter-matched), {default_text}"),
        Recipe("plain_default_2x", "control", _plain("--model.fixed_descriptor", default), False,
               f"ResNet18, {default_text}, 2x the steps", steps_factor=2),
        Recipe("amortised_g2", "control", ("--model.hidden_dim", "2"), True, "Hyper-ResNet18, generator width 2",
               default=False),
        Recipe("amortised_steps", "control", (), True, f"Hyper-ResNet18 with 3x the steps ({steps_text})",
               steps_factor=3, default=False),
    )


def _levers(modality: str, descriptors: str) -> tuple[Recipe, ...]:
    """The two levers beyond the paper, with the modality's ``amortised_mixed`` group count."""
    groups = MIXED_GROUPS[modality]
    return (
        Recipe("amortised_mixed", "lever", ("--run.descriptors_per_step", str(groups)), True,
               f"Hyper-ResNet18, {groups} descriptor groups per step ({descriptors})"),
        Recipe("amortised_from_plain", "lever", (), True, "Hyper-ResNet18 started from plain_default's run, then "
               "the same steps again", init_from="plain_default"),
    )


VISION: tuple[Recipe, ...] = (
    Recipe("amortised", "amortised", (), True, "Hyper-ResNet18 (width 16, generator width 8), 3 descriptors sampled"),
    Recipe("plain_default", "baseline", _plain("--model.fixed_descriptor", "default"), False,
           "ResNet18, spatial + appearance augmentations (SimCLR default)"),
    Recipe("plain_appearance", "baseline", _plain("--model.fixed_descriptor", "appearance"), False,
           "ResNet18, appearance augmentations only"),
    Recipe("plain_spatial", "baseline", _plain("--model.fixed_descriptor", "spatial"), False,
           "ResNet18, spatial augmentations only"),
    *_controls("default", "SimCLR default", "a plain run's steps per descriptor"),
    *_levers("vision", "all 3 each step"),
)

AUDIO: tuple[Recipe, ...] = (
    Recipe("amortised", "amortised", (), True, "Hyper-ResNet18 (width 16, generator width 8), 120 descriptors sampled"),
    Recipe("plain_default", "baseline", _plain("--model.fixed_descriptor", "all"), False,
           "ResNet18, all seven CLAR factors (SimCLR default)"),
    Recipe("plain_spectral", "baseline", _plain("--model.fixed_descriptor", ",".join(AUDIO_SPECTRAL)), False,
           "ResNet18, " + ", ".join(AUDIO_SPECTRAL)),
    Recipe("plain_temporal", "baseline", _plain("--model.fixed_descriptor", ",".join(AUDIO_TEMPORAL)), False,
           "ResNet18, " + ", ".join(AUDIO_TEMPORAL)),
    *_controls("all", "all factors", "120x would match a plain run per descriptor"),
    *_levers("audio", "16 of the 120 each step"),
)

RECIPES: dict[str, tuple[Recipe, ...]] = {"vision": VISION, "audio": AUDIO}


def recipe(modality: str, name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: On an unknown modality or name, listing the known ones.
    """
    if modality not in RECIPES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(RECIPES)}")
    known = {r.name: r for r in RECIPES[modality]}
    if name not in known:
        raise ValueError(f"unknown {modality} encoder {name!r}; expected some of {list(known)}")
    return known[name]


__all__ = ["AUDIO", "AUDIO_SPECTRAL", "AUDIO_TEMPORAL", "MIXED_GROUPS", "RECIPES", "VISION", "WIDE_WIDTH", "WIDTH",
           "Recipe",
           "recipe"]
