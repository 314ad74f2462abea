"""Whether a checkpoint may be resumed with the current settings: every difference, by key, or none.

A resumed run continues exactly or is refused. Every setting that shapes the trajectory must match the
checkpoint's: the whole config outside ``run`` (model, data, method, optim, init: compared key by key on the
``model_dump()``, so a method or backbone of another kind shows as its differing and missing keys), ``run``
except :data:`RESUMABLE_RUN_KEYS`, and the world size. ``run.extend`` lets ``run.steps`` grow only. A setting added
after a checkpoint was written (:data:`ADDED_KEYS`) matches when it now holds the value that computes what the
checkpoint's run computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.checkpoint import CheckpointError

#: ``run`` settings that may change on resume: where and how the run executes and reports, not what it computes.
RESUMABLE_RUN_KEYS = frozenset(
    {"output", "resume", "extend", "device", "num_workers", "log_every", "checkpoint_every", "progress"}
)
_MISSING = "<missing>"
#: Settings that older checkpoints lack, by dotted key, with the value that reproduces those runs.
ADDED_KEYS: dict[str, Any] = {"run.descriptors_per_step": 1, "init": {"from": None}}


def _added(key: str, saved: Any, current: Any) -> bool:
    """True when ``key`` is absent from the checkpoint and now holds its value from before it existed."""
    return saved is _MISSING and key in ADDED_KEYS and current == ADDED_KEYS[key]


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys (outside ``run``) whose values differ between two config dumps, as ``key: old (checkpoint) vs new``."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key == "run":
            continue
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b and not _added(f"{prefix}{key}", a, b):
            diffs.append(f"{prefix}{key}: {a!r} (checkpoint) vs {b!r} (now)")
    return diffs


def run_differences(saved: dict, current: dict, extend: bool) -> list[str]:
    """``run`` keys (outside :data:`RESUMABLE_RUN_KEYS`) that differ; a larger ``steps`` passes with ``extend``."""
    diffs = []
    for key in sorted((set(saved) | set(current)) - RESUMABLE_RUN_KEYS):
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if a == b or _added(f"run.{key}", a, b) or (key == "steps" and extend and isinstance(a, int)
                                                    and isinstance(b, int) and b > a):
            continue
        hint = ""
        if key == "steps":
            hint = " (run.extend only allows more steps)" if extend else " (set run.extend=true to run more steps)"
        diffs.append(f"run.{key}: {a!r} (checkpoint) vs {b!r} (now){hint}")
    return diffs


def saved_run(state: dict[str, Any]) -> dict[str, Any] | None:
    """The ``run`` settings a checkpoint was written with (older checkpoints keep them inside ``config``)."""
    return state.get("run", state.get("config", {}).get("run"))


def check_resume(state: dict[str, Any], config: dict[str, Any], run: dict[str, Any], world_size: int,
                 path: Path) -> None:
    """Raise :class:`CheckpointError` unless resuming ``state`` with these settings continues the same run.

    Args:
        state: The loaded checkpoint.
        config: The entry point's ``model_dump()`` now.
        run: ``run.model_dump()`` now.
        world_size: Processes now.
        path: The checkpoint, for the message.

    Raises:
        CheckpointError: Naming every differing key with its checkpoint and current value.
    """
    diffs = config_differences(state.get("config", {}), config)
    before = saved_run(state)
    if before is not None:
        diffs += run_differences(before, run, bool(run.get("extend")))
    saved_world = state.get("world_size")
    if saved_world is not None and saved_world != world_size:
        diffs.append(f"world size: {saved_world} (checkpoint) vs {world_size} (now)")
    if diffs:
        raise CheckpointError(
            f"{path} was written by a run with another configuration ({'; '.join(diffs)}). Resume with the same "
            "settings, or choose another run.output."
        )
