"""``python -m audio.fewshot``: few-shot audio evaluation (see :mod:`audio.fewshot.evaluate`)."""

import sys

from audio.fewshot.evaluate import FewShotConfig, main
from core import cli
from core.checkpoint import CheckpointError

if __name__ == "__main__":
    try:
        main(cli.parse(FewShotConfig, prog="python -m audio.fewshot"))
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"python -m audio.fewshot: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
