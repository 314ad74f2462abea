"""Shared pytest configuration: ``--runslow`` enables tests marked ``@pytest.mark.slow``; the ``device`` fixture.

``TORCH_DEVICE=cuda pytest`` runs every test that takes the ``device`` fixture on the GPU. It fails, rather
than falling back to the CPU, when torch sees no such device; and a run with a non-CPU ``TORCH_DEVICE`` in which
no test used the fixture fails at the end, so a GPU check cannot pass without running anything on the GPU.
``DEVICE_TESTS_REPORT=FILE`` writes ``{"device": ..., "tests": [...]}``: the tests that used the fixture.
"""

import json
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


_DEVICE_TESTS: list[str] = []


@pytest.fixture(autouse=True, scope="session")
def _private_store_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded-clip stores of the tests go to a temporary folder, never into the user's cache."""
    os.environ["AMORTISED_INVARIANCE_CACHE"] = str(tmp_path_factory.mktemp("store"))


def _device_under_test() -> torch.device:
    return torch.device(os.environ.get("TORCH_DEVICE", "cpu"))


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """Device under test, from ``TORCH_DEVICE`` (as in timm's tests); CPU by default."""
    dev = _device_under_test()
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"TORCH_DEVICE={dev} but torch sees no CUDA device; unset TORCH_DEVICE to test on the CPU.")
    _DEVICE_TESTS.append(request.node.nodeid)
    return dev


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    dev = _device_under_test()
    report = os.environ.get("DEVICE_TESTS_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"device": str(dev), "tests": _DEVICE_TESTS}, f, indent=1)
    if dev.type != "cpu" and session.testscollected and not _DEVICE_TESTS:
        print(f"\nTORCH_DEVICE={dev}: no test used the device fixture, so nothing ran on {dev}.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
