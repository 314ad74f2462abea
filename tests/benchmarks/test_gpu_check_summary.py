"""benchmarks/gpu_check_summary.py: a required step (the CUDA tests) that did not run or did not pass is "failed",
never "skipped", and the summary then exits 1."""

import json
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check_summary as summary


def _write(folder: Path, check: dict | None) -> Path:
    if check is not None:
        (folder / "gpu_check.json").write_text(json.dumps(check))
    return folder


def _row(step: str, status: str | int, **extra: object) -> dict:
    return {"step": step, "status": status, "seconds": 1, **extra}


@pytest.mark.parametrize("rows, reason", [
    ([_row("environment", "ok"), _row("paper_width_vision", "ok")], "did not run"),  # never reached
    ([_row("pytest", "skipped", reason="not run: 10s left of the budget")], "not run: 10s left of the budget"),
    ([_row("pytest", "failed", exit_code=1)], "did not pass"),
])
def test_a_required_step_that_did_not_pass_is_failed(tmp_path: Path, rows: list, reason: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = summary.summarise(_write(tmp_path, {"total_seconds": 5, "required": ["pytest"], "steps": rows}))
    assert out["steps"]["pytest"]["status"] == "failed" and out["steps"]["pytest"]["reason"] == reason
    assert out["failed"]
    monkeypatch.setattr(sys, "argv", ["gpu_check_summary.py", str(tmp_path)])
    assert summary.main() == 1


def test_a_passing_run_and_the_older_numeric_statuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [_row("environment", "ok", exit_code=0), _row("pytest", "ok", exit_code=0),
            _row("pretrain_smoke", "skipped", reason="not run: 12s left of the budget")]
    out = summary.summarise(_write(tmp_path, {"total_seconds": 5, "required": ["pytest"], "steps": rows}))
    assert not out["failed"] and out["steps"]["pretrain_smoke"]["status"] == "skipped"  # not required: skipped
    assert out["steps"]["pytest"] == {"status": "ok", "seconds": 1, "exit_code": 0, "required": True}
    monkeypatch.setattr(sys, "argv", ["gpu_check_summary.py", str(tmp_path)])
    assert summary.main() == 0
    older = summary.steps({"steps": [_row("pytest", 0), _row("pretrain_throughput", 2)]})  # exit codes as statuses
    assert older["pytest"]["status"] == "ok" and older["pretrain_throughput"]["status"] == "failed"
    assert older["pretrain_throughput"]["exit_code"] == 2


def test_no_gpu_check_json_means_the_required_step_failed(tmp_path: Path) -> None:
    out = summary.summarise(_write(tmp_path, None))
    assert out["failed"] and out["steps"]["pytest"]["status"] == "failed"
    assert "gpu_check.json" in out["missing"]
