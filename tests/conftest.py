"""Shared pytest configuration: ``--runslow`` enables tests marked ``@pytest.mark.slow``."""

import os

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def device() -> torch.device:
    """Device under test, from ``TORCH_DEVICE`` (as in timm's tests); CPU by default."""
    return torch.device(os.environ.get("TORCH_DEVICE", "cpu"))
