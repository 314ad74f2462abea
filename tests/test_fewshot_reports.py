"""Both modalities' few-shot entry points write one report schema: the same top-level keys, protocol keys and route
entries, so their numbers are comparable."""

import json

import torch

from audio.fewshot.evaluate import FewShotConfig
from audio.fewshot.evaluate import main as audio_fewshot
from core.checkpoint import save_encoder
from core.cli import load
from core.invariance import InvarianceSpace
from vision import evaluate as vision_evaluate

SHARED = {"task", "protocol", "routes", "paired", "classes", "provenance"}
PROTOCOL = {"n_way", "k_shot", "n_query", "episodes", "classifier", "lam", "seed", "selection_episodes",
            "per_episode", "ci"}
ROUTE = {"accuracy", "ci95", "episodes", "invariance", "invariance_std", "descriptor", "wall_time_s", "cpu_time_s",
         "episodes_per_s", "classifier"}


def _encoder(folder, factory: str, name: str, space: InvarianceSpace, kwargs: dict) -> str:
    module = __import__(factory.split(":")[0], fromlist=["create_backbone"])
    torch.manual_seed(0)
    encoder = module.create_backbone(name, space, **kwargs)
    save_encoder(folder, encoder, {"factory": factory, "name": name, "kwargs": kwargs}, space, step=0)
    (folder / "config.json").write_text(json.dumps({"data": {"image_size": 16}}))
    return str(folder)


def test_vision_and_audio_fewshot_reports_share_the_schema(tmp_path):
    vision_run = _encoder(tmp_path / "vision", "vision.models:create_backbone", "hyper_resnet18",
                          InvarianceSpace.from_name("vision_groups"),
                          {"image_size": 16, "width": 4, "hidden_dim": 2, "embed_dim": 4, "stem": None})
    cfg = load(vision_evaluate.EvaluateConfig, [
        "--checkpoint", vision_run, "--task", "synthetic:color", "--mode", "fewshot", "--output",
        str(tmp_path / "vision.json"), "--num_train", "80", "--num_test", "60", "--episodes", "4",
        "--selection_episodes", "3", "--n_query", "2", "--per_episode_steps", "1", "--progress", "false"])
    vision_evaluate.main(cfg)
    audio_run = _encoder(tmp_path / "audio", "audio.models:create_backbone", "hyper_resnet18",
                         InvarianceSpace.from_name("audio"),
                         {"width": 4, "n_mels": 16, "stem": "small", "embed_dim": 4, "hidden_dim": 2})
    audio_fewshot(FewShotConfig(checkpoint=audio_run, output=str(tmp_path / "audio.json"), synthetic_size=40,
                                synthetic_seconds=0.25, episodes=4, selection_episodes=3, n_query=2, steps=1,
                                progress=False))
    reports = [json.loads((tmp_path / f"{m}.json").read_text()) for m in ("vision", "audio")]
    for report in reports:
        assert SHARED <= set(report) and PROTOCOL <= set(report["protocol"])
        assert set(report["routes"]) == {"per_episode", "per_benchmark", "fixed"}
        for route in (report["routes"]["per_episode"], report["routes"]["per_benchmark"],
                      *report["routes"]["fixed"].values()):
            assert ROUTE <= set(route) and route["episodes"] == 4
        assert set(report["provenance"]) == {"code", "command", "environment"}
    vision, audio = reports
    assert set(vision["paired"]) == set(audio["paired"])
    assert set(vision["routes"]["per_benchmark"]) == set(audio["routes"]["per_benchmark"])
    assert vision["routes"]["per_benchmark"]["chosen_on"] == audio["routes"]["per_benchmark"]["chosen_on"]
