"""Where a result came from: the code's commit and working-tree state, the command and the environment.

The commit is read **once, when this module is first imported** (at process start for every entry point, which
imports it at the top), so a report names the code that ran, not whatever the checkout holds when the report is
written. ``dirty`` says whether the working tree differed from that commit, with a short hash of
``git status --porcelain`` so two dirty trees can be told apart. Outside a git checkout the commit is ``None`` and
the installed package version stands in.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _code_state() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit is not None else None
    try:
        version = metadata.version("amortised-invariance")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
        "status_hash": hashlib.sha256(status.encode()).hexdigest()[:12] if status else None,
        "version": version,
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


#: The code's state when the process started.
AT_START: dict[str, Any] = _code_state()


def environment() -> dict[str, Any]:
    """Python, library versions, platform, CPU count and accelerator."""
    import numpy
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu}


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """``{"code": <state at process start>, "command": ..., "environment": ...}`` for a results file.

    Args:
        command: The command line (default: this process's ``sys.argv``, as ``python -m module ...`` when run
            as a module).
    """
    argv = list(sys.argv) if command is None else list(command)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if command is None and spec is not None and spec.name:
        argv = ["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]]
    return {"code": dict(AT_START), "command": shlex.join(argv), "environment": environment()}


__all__ = ["AT_START", "environment", "provenance"]
