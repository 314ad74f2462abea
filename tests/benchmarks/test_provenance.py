"""benchmarks.provenance: the record of where a benchmark's numbers came from, its atomic writer, quick outputs."""

import json
import tempfile
from pathlib import Path

from benchmarks import provenance


def test_record_names_the_code_the_command_and_the_environment() -> None:
    out = provenance.record(["python", "-m", "benchmarks.example", "--quick"])
    code = out["code"]
    assert {"commit", "dirty", "status_hash"} <= set(code)
    assert code["commit"] is None or len(code["commit"]) == 40  # a full hash, read once at process start
    assert code == provenance.AT_START
    assert out["command"] == "python -m benchmarks.example --quick"
    env = out["environment"]
    assert {"python", "torch", "numpy", "platform", "cpus", "cuda", "libraries"} <= set(env)
    assert set(env["libraries"]) == set(provenance.LIBRARIES) and env["libraries"]["torch"]
    assert set(out["machine"]) == {"load_1min"} and "start" in out["machine"]["load_1min"]


def test_write_json_adds_the_provenance_and_the_end_load_and_leaves_no_partial_file(tmp_path: Path) -> None:
    started = provenance.record(["python", "-m", "benchmarks.example"])
    path = provenance.write_json(tmp_path / "deep" / "result.json", {"score": 0.5}, started)
    assert path == tmp_path / "deep" / "result.json"
    data = json.loads(path.read_text())
    assert data["score"] == 0.5
    assert data["provenance"]["code"] == started["code"]
    assert set(data["provenance"]["machine"]["load_1min"]) == {"start", "end"}
    assert "end" not in started["machine"]["load_1min"]  # the caller's record is not changed
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # written beside, then renamed over
    provenance.write_json(path, {"score": 0.7}, started)  # replaced whole
    assert json.loads(path.read_text())["score"] == 0.7


def test_quick_outputs_go_to_a_temporary_folder_never_to_the_results() -> None:
    quick = provenance.output_path("x_quick.json", quick=True)
    assert quick.parent == provenance.quick_folder() and quick.parent.is_dir()
    assert quick.is_relative_to(Path(tempfile.gettempdir()))
    assert not quick.is_relative_to(provenance.RESULTS)
    assert provenance.output_path("x.json", quick=False) == provenance.RESULTS / "x.json"
    assert provenance.output_path("x.json", quick=True, output="elsewhere/y.json") == Path("elsewhere/y.json")


def test_same_code_and_labels() -> None:
    clean = {"commit": "a" * 40, "dirty": False, "status_hash": None}
    dirty = {"commit": "a" * 40, "dirty": True, "status_hash": "123"}
    assert provenance.same_code(clean, dict(clean))
    assert not provenance.same_code(clean, dirty)
    assert not provenance.same_code(dirty, dirty | {"status_hash": "456"})
    assert not provenance.same_code({"commit": None}, {"commit": None})  # untraced matches nothing
    assert not provenance.same_code(None, clean)
    assert provenance.code_label(clean) == "aaaaaaa" and provenance.code_label(dirty) == "aaaaaaa+dirty"
    assert provenance.code_label(None) == "untraced"
