"""Fixtures shared by the vision tests: one tiny pre-training run for every evaluation-side test."""

from pathlib import Path

import pytest

from core.cli import load
from vision.pretrain import PretrainConfig
from vision.pretrain import main as pretrain_main


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run of a width-4 Hyper-ResNet18 on 128 synthetic images (config.json, encoder, checkpoint)."""
    out = tmp_path_factory.mktemp("run")
    cfg = load(PretrainConfig, ["--model.width", "4", "--model.hidden_dim", "2", "--data.synthetic_size", "128",
                                "--run.batch_size", "32", "--run.steps", "3", "--run.num_workers", "0",
                                "--run.progress", "false", "--run.output", str(out), "--method.proj_hidden_dim", "32"])
    pretrain_main(cfg)
    return out
