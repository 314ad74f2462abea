"""MetricsLogger: one line per window of log_every steps (and at the last step), timings, resume truncation."""

import json
from pathlib import Path

from core.pretrain.metrics import MetricsLogger


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def run_steps(logger: MetricsLogger, steps: range, samples: int = 8) -> list[dict | None]:
    out = []
    logger.start_clock()
    for step in steps:
        logger.data_ready()
        out.append(logger.log(step, float(step), samples=samples, epoch=0, fields={"lr": 0.1 * step}))
    return out


def test_windows_average_the_loss_and_close_at_the_last_step(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, log_every=2, total_steps=5, tensorboard=False)
    records = run_steps(logger, range(1, 6))
    assert [r is not None for r in records] == [False, True, False, True, True]
    written = lines(tmp_path)
    assert [(r["step"], r["loss"], r["last_loss"], r["lr"]) for r in written] == [
        (2, 1.5, 2.0, 0.2), (4, 3.5, 4.0, 0.4), (5, 5.0, 5.0, 0.5)]
    assert list(written[0]) == ["step", "epoch", "loss", "last_loss", "lr", "data_time", "step_time",
                                "samples_per_s"]
    assert all(r["data_time"] >= 0 and r["step_time"] >= 0 and r["samples_per_s"] > 0 for r in written)


def test_restart_keeps_the_resumed_trajectory_or_starts_fresh(tmp_path: Path) -> None:
    run_steps(MetricsLogger(tmp_path, log_every=1, total_steps=6, tensorboard=False), range(1, 7))
    MetricsLogger(tmp_path, log_every=1, total_steps=6, tensorboard=False).restart(4)  # killed after step 4's save
    assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3, 4]
    MetricsLogger(tmp_path, log_every=1, total_steps=6, tensorboard=False).restart(None)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, log_every=1, total_steps=3, enabled=False)
    assert run_steps(logger, range(1, 4)) == [None, None, None] and not list(tmp_path.iterdir())
