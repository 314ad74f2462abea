"""Every benchmark's ``--quick`` mode, run as ``python -m benchmarks.NAME --quick`` in a subprocess.

``TMPDIR`` points into the test's folder, so a quick run's outputs (:func:`benchmarks.provenance.output_path`) must
land in a ``benchmarks-quick-*`` folder there: never in ``benchmarks/results``. Each output carries the provenance
of :func:`benchmarks.provenance.record` and the benchmark's key results. Runs that take more than about 20 s on
one busy core are marked slow (``--runslow``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.provenance import RESULTS

ROOT = Path(__file__).resolve().parents[2]


def quick(name: str, tmp_path: Path, *args: str, timeout: float = 600) -> dict:
    """Run ``python -m benchmarks.NAME --quick ARGS`` and return its one results JSON (checked for provenance)."""
    before = {path: path.stat().st_mtime for path in RESULTS.glob(f"{name}*")}
    env = os.environ | {"TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    outputs = sorted(tmp_path.glob("benchmarks-quick-*/*.json"))
    assert len(outputs) == 1, outputs
    assert {path: path.stat().st_mtime for path in RESULTS.glob(f"{name}*")} == before  # results left alone
    result = json.loads(outputs[0].read_text())
    provenance = result["provenance"]
    assert "commit" in provenance["code"] and "dirty" in provenance["code"]
    assert provenance["command"].startswith(f"python -m benchmarks.{name} --quick")
    assert {"start", "end"} <= set(provenance["machine"]["load_1min"])
    assert provenance["environment"]["libraries"]["torch"]
    return result


def test_invariance_help() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.invariance", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_paper_width_step(tmp_path: Path) -> None:
    result = quick("paper_width_step", tmp_path, "--device", "cpu")
    assert set(result["models"]) == {"plain", "hyper"}
    assert result["ratio_hyper_over_plain"] > 0 and result["models"]["hyper"]["median_step_s"] > 0
    assert result["device_settings"]["device"] == "cpu" and "breakdown" in result


def test_audio_augment_throughput(tmp_path: Path) -> None:
    result = quick("audio_augment_throughput", tmp_path, "--device", "cpu")
    assert [row["path"] for row in result["augmentation"][:2]] == ["fast", "reference"]
    assert result["fast_over_reference_per_cpu_s"] > 0 and len(result["factors"]) == 7
    assert set(result["end_to_end"]) == {"workers", "training"} and result["model"]["clips_per_s"] > 0


def test_fewshot_speed(tmp_path: Path) -> None:
    result = quick("fewshot_speed", tmp_path, "--routes", "false")
    for classifier in ("ridge", "logistic"):
        assert 0 <= result["results"][classifier]["accuracy"] <= 1 and result["results"][classifier]["seconds"] > 0


def test_gpu_check_summary_records_its_provenance(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check_summary", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # nothing ran: the required step failed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] and "commit" in summary["provenance"]["code"]


@pytest.mark.slow
def test_fewshot_speed_routes(tmp_path: Path) -> None:
    result = quick("fewshot_speed", tmp_path)
    routes = result["routes"]["routes"]
    assert {"per_episode", "per_benchmark", "fixed"} <= set(routes)


@pytest.mark.slow
def test_audio_fewshot_speed(tmp_path: Path) -> None:
    result = quick("audio_fewshot_speed", tmp_path, "--device", "cpu")
    assert {"fixed", "per_benchmark", "per_episode"} <= set(result["routes"])
    assert result["paper_size"]["measured_device_s_per_episode"] > 0


@pytest.mark.slow
def test_audio_fewshot_memory(tmp_path: Path) -> None:
    result = quick("audio_fewshot_memory", tmp_path)
    assert result["sizes"] == [100, 400] and set(result["growth"]) == {"cold", "warm"}
    assert all(row["peak_rss_bytes"] > 0 for row in result["runs"].values())


@pytest.mark.slow
def test_audio_table8_synthetic(tmp_path: Path) -> None:
    result = quick("audio_table8_synthetic", tmp_path)
    assert set(result["summary"]) == {"timbre", "pitch"}
    assert all(run["made_by_benchmark"] and run["step"] == 3 for run in result["runs"].values())


@pytest.mark.slow
def test_entry_points(tmp_path: Path) -> None:
    result = quick("entry_points", tmp_path)
    assert result["failed"] == [] and set(result["runs"]) >= {"vision_pretrain", "audio_fewshot"}


@pytest.mark.slow
def test_hypernet_overhead(tmp_path: Path) -> None:
    result = quick("hypernet_overhead", tmp_path)
    assert set(result["depths"]) == {"18"}


@pytest.mark.slow
def test_pretrain_throughput(tmp_path: Path) -> None:
    result = quick("pretrain_throughput", tmp_path)
    assert result["augmentation"]["rows"] and result["model"]["rows"] and result["end_to_end"]["rows"]


@pytest.mark.slow
def test_pareto(tmp_path: Path) -> None:
    result = quick("pareto", tmp_path)
    [entry] = result["results"].values()
    assert {"linear", "invariance", "grid_refine", "ft4_budget"} <= set(entry["points"])
    assert result["run"]["made_by_benchmark"] and result["run"]["step"] == 3


@pytest.mark.slow
def test_probe_cost(tmp_path: Path) -> None:
    result = quick("probe_cost", tmp_path)
    assert set(result["tasks"]) == {"synthetic:shape"} and "fewshot" in result
    assert result["checkpoint"]["made_by_benchmark"]


@pytest.mark.slow
def test_probe_convergence(tmp_path: Path) -> None:
    result = quick("probe_convergence", tmp_path)
    assert set(result["tasks"]) == {"color"} and result["run"]["made_by_benchmark"]


@pytest.mark.slow
def test_quality(tmp_path: Path) -> None:
    result = quick("quality", tmp_path)
    assert set(result["runs"]) == {"amortised", "plain_default"}
    assert all(run["made_by_benchmark"] and run["step"] == 3 for run in result["runs"].values())
    assert set(result["scores"]["amortised"]) == {"shape", "color", "position", "mirror"}


@pytest.mark.slow
def test_suite_synthetic(tmp_path: Path) -> None:
    result = quick("suite_synthetic", tmp_path)
    assert result["run"]["made_by_benchmark"] and result["suite_missing"]
    assert 0 <= result["digits"]["score"] <= 1
