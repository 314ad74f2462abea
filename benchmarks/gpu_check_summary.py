"""The headline numbers of a ``benchmarks/gpu_check.sh`` run, from whatever JSON its steps left: summary.json.

    python -m benchmarks.gpu_check_summary benchmarks/results/gpu

Reads ``gpu_check.json`` (step statuses), ``paper_width_step.json``, ``paper_width_step_audio.json``,
``audio_fewshot_speed.json`` and ``audio_augment.json`` when present; a missing or unreadable benchmark file is
listed under ``missing`` instead of failing, so a partial run still gets its summary.

Every step's status is ``ok``, ``failed`` or ``skipped``. A required step (``gpu_check.json``'s ``required``; the
CUDA test step ``pytest`` when the file does not say) that did not run or did not pass is ``failed``, never
``skipped``, and so is every required step when ``gpu_check.json`` itself is missing (the script never got to the
end). The summary's ``failed`` is true when any step failed, and the command then exits 1. ``summary.json``
records the provenance of this process (:func:`benchmarks.provenance.record`) like every results file; each
benchmark file it reads keeps its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.provenance import code_label, record, write_json

#: Required steps when ``gpu_check.json`` does not list them.
REQUIRED = ("pytest",)


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def paper_width(result: dict) -> dict:
    """Step times, ratio, memory and the hyper step's breakdown (ms) of one ``paper_width_step.py`` report."""
    settings, models = result["settings"], result["models"]
    hyper = result.get("breakdown", {}).get("hyper", {})
    env = result.get("provenance", {}).get("environment") or result.get("environment", {})  # older files: no provenance
    return {
        "device": env.get("gpu") or "cpu", "torch": env.get("torch"),
        "code": code_label(result.get("provenance", {}).get("code")),
        "batch": settings["batch"], "input": settings["input_shape"], "dtype": settings["dtype"],
        "loss": settings["loss"], "plain_ms": models["plain"]["median_step_s"] * 1e3,
        "hyper_ms": models["hyper"]["median_step_s"] * 1e3, "ratio": result["ratio_hyper_over_plain"],
        "goal": result["goal"],
        "peak_alone_gb": {name: row["memory"].get("peak_alone_gb") for name, row in models.items()},
        "optimizer_state_gb": {name: row["memory"]["optimizer_state_gb"] for name, row in models.items()},
        "hyper_breakdown_ms": {k: v * 1e3 for k, v in {**hyper.get("median_s", {}),
                                                       **hyper.get("derived_s", {})}.items()},
    }


def status(row: dict) -> str:
    """``ok``, ``failed`` or ``skipped`` of a step row (older runs recorded the exit code as the status)."""
    value = row.get("status")
    if value in ("ok", "failed", "skipped"):
        return value
    return "ok" if value == 0 else "failed"


def steps(check: dict | None) -> dict[str, dict]:
    """Per step: status, seconds, exit code, whether required, and why it failed when it did not run."""
    rows = (check or {}).get("steps", [])
    required = (check or {}).get("required", REQUIRED)
    out = {}
    for row in rows:
        old_code = row.get("status") if isinstance(row.get("status"), int) else None
        out[row["step"]] = {"status": status(row), "seconds": row.get("seconds", 0),
                            "exit_code": row.get("exit_code", old_code), "required": row["step"] in required}
        if row.get("reason"):
            out[row["step"]]["reason"] = row["reason"]
    for name in required:
        if name not in out:
            reason = "did not run" if check else "gpu_check.json missing: the script did not finish"
            out[name] = {"status": "failed", "seconds": 0, "exit_code": None, "required": True, "reason": reason}
        elif out[name]["status"] != "ok":
            out[name] = out[name] | {"status": "failed", "reason": out[name].get("reason") or "did not pass"}
    return out


def summarise(out: Path) -> dict:
    summary: dict = {"missing": []}
    check = load(out / "gpu_check.json")
    summary["steps"] = steps(check)
    summary["failed"] = any(s["status"] == "failed" for s in summary["steps"].values())
    if check:
        summary["total_seconds"] = check["total_seconds"]
    else:
        summary["missing"].append("gpu_check.json")
    for key, name in (("paper_width_vision", "paper_width_step.json"),
                      ("paper_width_audio", "paper_width_step_audio.json")):
        result = load(out / name)
        if result:
            summary[key] = paper_width(result)
        else:
            summary["missing"].append(name)
    fewshot = load(out / "audio_fewshot_speed.json")
    if fewshot and "paper_size" in fewshot:
        q = fewshot["paper_size"]
        summary["audio_fewshot_per_episode_paper_size"] = {
            "episodes": q["episodes_measured"], "s_per_episode": q["measured_device_s_per_episode"],
            "s_for_10000": q["measured_device_s_for_10000"], "forward_mode_step_s": q["forward_mode_step_s"],
            "reverse_step_s": q["reverse_step_s"], "score_s": q["score_s"]}
    else:
        summary["missing"].append("audio_fewshot_speed.json")
    augment = load(out / "audio_augment.json")
    if augment:
        summary["audio_augment"] = {
            "recipe": augment["recipe"], "model": augment.get("model"),
            "augmentation": [{k: row.get(k) for k in ("path", "device", "clips_per_s")}
                             for row in augment["augmentation"]],
            "end_to_end": {where: {k: row.get(k) for k in ("data_share", "clips_per_s", "steps")}
                           for where, row in (augment.get("end_to_end") or {}).items()}}
    else:
        summary["missing"].append("audio_augment.json")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    started = record()
    out = Path(argv[0] if argv else "benchmarks/results/gpu")
    summary = summarise(out)
    write_json(out / "summary.json", summary, started)
    print("\n=== summary")
    for name, step in summary["steps"].items():
        note = f" ({step['reason']})" if step.get("reason") else ""
        print(f"  {name:<22} {'required ' if step['required'] else '':<9}status {step['status']:<8} "
              f"{step['seconds']:>4} s{note}")
    for key in ("paper_width_vision", "paper_width_audio"):
        if key in summary:
            s = summary[key]
            print(f"{key}: {s['device']}, batch {s['batch']} x {s['input']}, {s['dtype']}, {s['loss']}: plain "
                  f"{s['plain_ms']:.1f} ms, hyper {s['hyper_ms']:.1f} ms per step, ratio {s['ratio']:.2f}x (goal "
                  f"{s['goal']}x); peak GB alone {s['peak_alone_gb']}; hyper breakdown ms "
                  + ", ".join(f"{k} {v:.1f}" for k, v in s["hyper_breakdown_ms"].items()))
    for key in ("audio_fewshot_per_episode_paper_size", "audio_augment"):
        if key in summary:
            print(f"{key}: {json.dumps(summary[key])[:600]}")
    if summary["missing"]:
        print(f"missing: {', '.join(summary['missing'])}")
    print(f"wrote {out / 'summary.json'}" + ("; FAILED" if summary["failed"] else ""))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
