"""Both modalities' ``evaluate`` entry points run one driver and write one report schema: the same top-level keys."""

import json
from pathlib import Path

import torch

from audio import evaluate as audio_evaluate
from core.checkpoint import save_encoder
from core.cli import load
from core.invariance import InvarianceSpace
from vision import evaluate as vision_evaluate

SMALL = ["--num_train", "40", "--num_test", "20", "--epochs", "1", "--batch_size", "20", "--progress", "false"]


def _run(folder: Path, factory: str, space: InvarianceSpace, kwargs: dict, data: dict) -> str:
    module = __import__(factory.split(":")[0], fromlist=["create_backbone"])
    torch.manual_seed(0)
    encoder = module.create_backbone("hyper_resnet18", space, **kwargs)
    save_encoder(folder, encoder, {"factory": factory, "name": "hyper_resnet18", "kwargs": kwargs}, space, step=0)
    (folder / "config.json").write_text(json.dumps({"data": data}))
    return str(folder)


def test_vision_and_audio_evaluate_reports_share_the_top_level_keys(tmp_path: Path) -> None:
    vision_run = _run(tmp_path / "vision", "vision.models:create_backbone",
                      InvarianceSpace.from_name("vision_groups"),
                      {"image_size": 16, "width": 4, "hidden_dim": 2, "embed_dim": 4, "stem": None},
                      {"image_size": 16})
    audio_run = _run(tmp_path / "audio", "audio.models:create_backbone", InvarianceSpace.from_name("audio"),
                     {"width": 4, "n_mels": 16, "stem": "small", "embed_dim": 4, "hidden_dim": 2},
                     {"clip_seconds": 0.25})
    reports = {}
    for name, module, run, task in (("vision", vision_evaluate, vision_run, "synthetic:color"),
                                    ("audio", audio_evaluate, audio_run, "synthetic:timbre")):
        cfg = load(module.EvaluateConfig, ["--checkpoint", run, "--task", task, "--output",
                                           str(tmp_path / f"{name}.json"), *SMALL])
        module.main(cfg)
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    vision, audio = reports["vision"], reports["audio"]
    assert set(vision) == set(audio)
    assert {"task", "mode", "metric", "score", "invariance", "descriptor", "quantized", "quantized_refit",
            "wall_time_s", "trained_params", "bound", "routes", "provenance"} <= set(vision)
    assert set(vision["routes"]["gradient"]) == set(audio["routes"]["gradient"])
    assert set(vision["bound"]) == set(audio["bound"])
    assert list(vision["invariance"]) == ["spatial", "appearance"] and len(audio["invariance"]) == 7
