"""benchmarks.runs.make_or_resume_run: a run is made once through ``python -m vision.pretrain``, reused (no step
trained) by the same code and configuration, moved aside when another commit made it, refused when the
configuration differs."""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import runs
from benchmarks.provenance import AT_START

#: A two-step run on a small synthetic set: seconds on one core.
TINY = ["--run.steps", "2", "--run.batch_size", "8", "--data.synthetic_size", "32", "--run.num_workers", "0",
        "--run.progress", "false"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("runs") / "tiny"
    return runs.make_or_resume_run("vision.pretrain", TINY, folder, log=folder.parent / "made.log")


def test_a_run_is_made_with_its_provenance(made: dict) -> None:
    folder = Path(made["path"])
    assert made["step"] == 2 and not made["reused"] and made["moved_aside"] is None and made["made_by_benchmark"]
    assert made["code"] == AT_START
    assert made["command"].startswith("python -m vision.pretrain --run.output ")
    written = runs.run_provenance(folder)
    assert written["code"] == AT_START and written["entry"] == "vision.pretrain" and written["step"] == 2
    assert written["finished"] and "--run.steps 2" in written["command"]
    assert (folder / "config.json").is_file() and (folder / "encoder.json").is_file()


def test_the_same_code_and_configuration_reuse_it(made: dict) -> None:
    again = runs.make_or_resume_run("vision.pretrain", TINY, made["path"])
    assert again["reused"] and again["step"] == 2 and again["moved_aside"] is None
    metrics = (Path(made["path"]) / "metrics.jsonl").read_text().splitlines()
    assert not any(json.loads(line).get("step", 0) > 2 for line in metrics if line.strip())


def test_another_configuration_is_refused_naming_the_key(made: dict) -> None:
    before = sorted(p.name for p in Path(made["path"]).iterdir())
    changed = [*TINY[:2], "--run.batch_size", "4", *TINY[4:]]
    with pytest.raises(runs.RunRefused, match="run.batch_size"):
        runs.make_or_resume_run("vision.pretrain", changed, made["path"])
    assert sorted(p.name for p in Path(made["path"]).iterdir()) == before  # left as it was


def _fake_entry_point(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the entry point's command instead of running it (the real run is checked above)."""
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: object) -> object:
        calls.append(command)
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(runs.subprocess, "run", run)
    return calls


def test_a_run_of_another_commit_is_moved_aside_and_made_afresh(made: dict, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(made["path"], folder)
    record = json.loads((folder / runs.PROVENANCE).read_text())
    record["code"] = record["code"] | {"commit": "0" * 40, "dirty": False, "status_hash": None}
    (folder / runs.PROVENANCE).write_text(json.dumps(record))
    calls = _fake_entry_point(monkeypatch)
    out = runs.make_or_resume_run("vision.pretrain", TINY, folder)
    moved = Path(out["moved_aside"])
    assert moved.parent == tmp_path and moved.name.startswith("tiny.stale-0000000-")
    assert runs.run_provenance(moved)["code"]["commit"] == "0" * 40  # kept, not deleted
    assert (moved / "checkpoint.pt").is_file() and not (folder / "checkpoint.pt").exists()
    assert calls == [[calls[0][0], "-m", "vision.pretrain", "--run.output", str(folder), *TINY]]
    assert not out["reused"] and runs.run_provenance(folder)["code"] == AT_START  # made afresh by this code


def test_a_folder_without_provenance_is_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "by-hand"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"made by hand")
    calls = _fake_entry_point(monkeypatch)
    out = runs.make_or_resume_run("vision.pretrain", TINY, folder)
    assert Path(out["moved_aside"]).name.startswith("by-hand.stale-untraced-")
    assert len(calls) == 1 and calls[0][1:5] == ["-m", "vision.pretrain", "--run.output", str(folder)]


def test_an_unknown_entry_point_and_a_given_checkpoint() -> None:
    with pytest.raises(ValueError, match="unknown pre-training entry point"):
        runs.make_or_resume_run("vision.evaluate", [], "nowhere")
    described = runs.describe_run("no/such/run")
    assert described == {"path": "no/such/run", "code": None, "code_label": "untraced", "made_by_benchmark": False}
