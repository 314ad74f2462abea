"""The embedded synthetic downstream tasks of each modality, and what each task needs of the descriptor.

Vision (``vision.tasks``, 32 px): ``shape`` (which shape: wants both invariances), ``color`` (which colour: wants
low appearance invariance), ``position`` (where, R²: wants low spatial invariance), ``mirror`` (which way it
faces: wants low spatial invariance). Audio (``audio.data.synthetic``, 1-s clips): ``timbre`` (which instrument,
8 classes: wants pitch invariance), ``pitch`` (the MIDI note, R²: wants low pitch-shift invariance), ``onset``
(seconds, R²: wants low time-shift invariance). All tasks of a modality share their inputs (the same images or
clips, with other labels), so features are extracted once per descriptor.
"""

from __future__ import annotations

import numpy as np
import torch

from core.invariance import InvarianceSpace
from vision.tasks import EVAL_SEED_OFFSET, TaskData, load_task

VISION_TASKS = ("shape", "color", "position", "mirror")
AUDIO_TASKS = ("timbre", "pitch", "onset")
TASKS: dict[str, tuple[str, ...]] = {"vision": VISION_TASKS, "audio": AUDIO_TASKS}

#: The paper's claim per task: (coordinate, the side its learned value should fall on). ``low`` means the task
#: needs the encoder to stay sensitive to that factor.
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "vision": {"color": ("appearance", "low"), "position": ("spatial", "low"), "mirror": ("spatial", "low")},
    "audio": {"pitch": ("pitch_shift", "low"), "onset": ("time_shift", "low"), "timbre": ("pitch_shift", "high")},
}


def load_tasks(modality: str, space: InvarianceSpace, num_train: int, num_test: int, seed: int = 0,
               image_size: int = 32, clip_seconds: float = 1.0) -> dict[str, TaskData]:
    """Every synthetic task of a modality, on shared inputs.

    Args:
        modality: ``vision`` or ``audio``.
        space: The encoders' descriptor space (vision's centre transform needs it).
        num_train: Training inputs (the probes hold out 20 % of them for validation).
        num_test: Test inputs.
        seed: Seed of the inputs (offset from pre-training's, so no pre-training input is a test input).
        image_size: Vision input side.
        clip_seconds: Audio clip length.

    Returns:
        ``{task: TaskData}``; audio inputs are z-normalised waveforms ``(N, samples)`` at 16 kHz.
    """
    if modality == "vision":
        return {t: load_task(f"synthetic:{t}", image_size, space, num_train=num_train, num_test=num_test, seed=seed)
                for t in VISION_TASKS}
    if modality != "audio":
        raise ValueError(f"unknown modality {modality!r}; expected 'vision' or 'audio'")
    from audio.data.synthetic import TIMBRES, SyntheticTones

    tones = SyntheticTones(size=num_train + num_test, seconds=clip_seconds, seed=EVAL_SEED_OFFSET + seed)
    waves = torch.from_numpy(np.stack([tones[i] for i in range(len(tones))]).astype(np.float32))  # (N, samples)
    out = {}
    for task in AUDIO_TASKS:
        y = torch.from_numpy(tones.targets(task))
        classification = task == "timbre"
        y = y if classification else y.float().unsqueeze(1)  # regression targets: (N, 1)
        out[task] = TaskData(name=f"synthetic-audio:{task}", kind="classification" if classification else "regression",
                             metric="top1" if classification else "r2",
                             num_outputs=len(TIMBRES) if classification else 1,
                             x_train=waves[:num_train], y_train=y[:num_train], x_test=waves[num_train:],
                             y_test=y[num_train:], protocol=f"synthetic tones, seed {EVAL_SEED_OFFSET + seed}")
    return out


__all__ = ["AUDIO_TASKS", "EXPECTED", "TASKS", "VISION_TASKS", "load_tasks"]
