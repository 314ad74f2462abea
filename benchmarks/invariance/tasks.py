"""The embedded synthetic downstream tasks of each modality, what each task needs of the descriptor, and the
rule that draws each seed's inputs.

Vision (``vision.tasks``, 32 px): ``color`` (which colour: wants low appearance invariance), ``position`` (where,
R²: wants low spatial invariance), ``mirror`` (which way it faces: wants low spatial invariance). Audio
(``audio.data.synthetic``, 1-s clips): ``timbre`` (which instrument, 8 classes: wants pitch invariance),
``pitch`` (the MIDI note, R²: wants low pitch-shift invariance), ``onset`` (seconds, R²: wants low time-shift
invariance). All tasks of a modality share their inputs (the same images or clips, with other labels), so
features are extracted once per descriptor.

Vision's ``shape`` task (8 shapes) is not in the benchmark's list (it stays available as ``synthetic:shape`` in
``vision.tasks``): at this budget it does not separate encoders. Every encoder, readout and seed of the 3-seed
vision run scored 0.13-0.23 top-1 (means 0.14-0.22, chance 0.125), and a logistic readout on the raw pixels of
the same 1,000 training images scores 0.156 on 1,000 held-out images (0.185 with 5,000 training images): at this
readout budget the task sits near chance even on the pixels themselves. A task that cannot separate recipes
only adds a comparison to correct for.

Inputs (:func:`load_tasks`): one evaluation stream per modality (``vision.tasks.EVAL_SEED_OFFSET``, a seed that
pre-training never uses; item ``i`` depends only on the stream's seed and ``i``). Training inputs are items
``0 .. num_train - 1``, the same for every seed. Test inputs are ``num_test`` items drawn without replacement
from the pool of items ``num_train .. num_train + test_pool - 1`` by the benchmark seed
(:func:`draw_test_inputs`), so the spread over seeds includes test-sampling noise, while both sides of a
seed-paired comparison see the same test inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from core.downstream.task import TaskData
from core.invariance import InvarianceSpace
from vision.tasks import EVAL_SEED_OFFSET, load_task

VISION_TASKS = ("color", "position", "mirror")
AUDIO_TASKS = ("timbre", "pitch", "onset")
TASKS: dict[str, tuple[str, ...]] = {"vision": VISION_TASKS, "audio": AUDIO_TASKS}
#: Metric of each task (also of ``shape``, which stored runs may hold).
METRICS: dict[str, dict[str, str]] = {
    "vision": {"shape": "top1", "color": "top1", "position": "r2", "mirror": "top1"},
    "audio": {"timbre": "top1", "pitch": "r2", "onset": "r2"},
}
#: Test pool as a multiple of ``num_test`` when not given.
TEST_POOL_FACTOR = 4
#: Stream of the test draw's generator (kept apart from other uses of the seed).
_DRAW_STREAM = 0x7E57

#: The paper's claim per task: (coordinate, the side its learned value should fall on). ``low`` means the task
#: needs the encoder to stay sensitive to that factor.
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "vision": {"color": ("appearance", "low"), "position": ("spatial", "low"), "mirror": ("spatial", "low")},
    "audio": {"pitch": ("pitch_shift", "low"), "onset": ("time_shift", "low"), "timbre": ("pitch_shift", "high")},
}


def draw_test_inputs(seed: int, num_test: int, test_pool: int) -> np.ndarray:
    """The test inputs of ``seed``: ``num_test`` positions in the pool, without replacement, sorted.

    Raises:
        ValueError: If the pool is smaller than ``num_test``.
    """
    if not 0 < num_test <= test_pool:
        raise ValueError(f"need 0 < num_test <= test_pool, got num_test={num_test}, test_pool={test_pool}")
    rng = np.random.default_rng([_DRAW_STREAM, int(seed)])
    return np.sort(rng.choice(test_pool, size=num_test, replace=False))


def input_rule(num_train: int, num_test: int, test_pool: int) -> dict:
    """The inputs rule as recorded in the benchmark's JSON config."""
    return {"stream_seed": EVAL_SEED_OFFSET, "train": f"items 0..{num_train - 1} of the stream, the same for every "
            "seed", "test_pool": test_pool, "test_pool_items": f"{num_train}..{num_train + test_pool - 1}",
            "test_draw": f"{num_test} pool items without replacement, numpy default_rng([{_DRAW_STREAM}, seed])"
            ".choice(test_pool, num_test, replace=False), sorted"}


def load_tasks(modality: str, space: InvarianceSpace, num_train: int, num_test: int, seed: int = 0,
               test_pool: int | None = None, image_size: int = 32, clip_seconds: float = 1.0) -> dict[str, TaskData]:
    """Every benchmark task of a modality, on shared inputs: fixed training inputs, the seed's test draw.

    Args:
        modality: ``vision`` or ``audio``.
        space: The encoders' descriptor space (vision's centre transform needs it).
        num_train: Training inputs, items ``0 .. num_train - 1`` of the evaluation stream (the probes hold out
            20 % of them for validation).
        num_test: Test inputs, drawn from the pool by ``seed``.
        seed: The benchmark seed: picks the test draw (:func:`draw_test_inputs`), not the stream.
        test_pool: Items after the training ones that the test inputs are drawn from; ``TEST_POOL_FACTOR *
            num_test`` when not given (``num_test`` makes every seed's test set the same).
        image_size: Vision input side.
        clip_seconds: Audio clip length.

    Returns:
        ``{task: TaskData}``; audio inputs are z-normalised waveforms ``(N, samples)`` at 16 kHz.

    Raises:
        ValueError: On an unknown modality or a pool smaller than ``num_test``.
    """
    pool = TEST_POOL_FACTOR * num_test if test_pool is None else int(test_pool)
    draw = draw_test_inputs(seed, num_test, pool)
    protocol = (f"stream seed {EVAL_SEED_OFFSET}: train items 0..{num_train - 1}; test {num_test} of items "
                f"{num_train}..{num_train + pool - 1} drawn by seed {seed}")
    if modality == "vision":
        out, shared = {}, None
        for task in VISION_TASKS:
            data = load_task(f"synthetic:{task}", image_size, space, num_train=num_train, num_test=pool, seed=0)
            if shared is None:  # every task renders the same stream: keep one copy of the images
                shared = (data.x_train, data.x_test[torch.from_numpy(draw)])
            out[task] = TaskData(data.name, data.kind, data.metric, data.num_outputs, shared[0], data.y_train,
                                 shared[1], data.y_test[torch.from_numpy(draw)], protocol=protocol)
        return out
    if modality != "audio":
        raise ValueError(f"unknown modality {modality!r}; expected 'vision' or 'audio'")
    from audio.data.synthetic import TIMBRES, SyntheticTones

    tones = SyntheticTones(size=num_train + pool, seconds=clip_seconds, seed=EVAL_SEED_OFFSET)
    items = np.concatenate([np.arange(num_train), num_train + draw])  # training items, then the test draw
    waves = torch.from_numpy(np.stack([tones[int(i)] for i in items]).astype(np.float32))  # (N + M, samples)
    out = {}
    for task in AUDIO_TASKS:
        y = torch.from_numpy(tones.targets(task)[items])
        classification = task == "timbre"
        y = y if classification else y.float().unsqueeze(1)  # regression targets: (N + M, 1)
        out[task] = TaskData(name=f"synthetic-audio:{task}", kind="classification" if classification else "regression",
                             metric="top1" if classification else "r2",
                             num_outputs=len(TIMBRES) if classification else 1,
                             x_train=waves[:num_train], y_train=y[:num_train], x_test=waves[num_train:],
                             y_test=y[num_train:], protocol=protocol)
    return out


__all__ = ["AUDIO_TASKS", "EXPECTED", "METRICS", "TASKS", "TEST_POOL_FACTOR", "VISION_TASKS", "draw_test_inputs",
           "input_rule", "load_tasks"]
