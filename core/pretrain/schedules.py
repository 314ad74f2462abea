"""Per-step schedules, precomputed once (as DINO's ``cosine_scheduler``)."""

from __future__ import annotations

import math


def cosine_schedule(base: float, final: float, steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> list[float]:
    """Linear warm-up from ``warmup_start`` to ``base``, then a half cosine from ``base`` to ``final``.

    Returns:
        One value per step, ``len == steps``.
    """
    if steps < 1 or warmup_steps < 0:
        raise ValueError(f"cosine_schedule needs steps >= 1 and warmup_steps >= 0, got {steps}, {warmup_steps}.")
    warmup_steps = min(warmup_steps, steps)
    values = [warmup_start + (base - warmup_start) * (i + 1) / warmup_steps for i in range(warmup_steps)]
    decay = steps - warmup_steps
    values += [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / decay)) for i in range(decay)]
    return values
