"""``python -m audio.fewshot``: few-shot audio evaluation (see :mod:`audio.fewshot.evaluate`)."""

from audio.fewshot.evaluate import FewShotConfig, main
from core import cli

#: The flags as MetaAudio's and this README's commands spell them, beside the field names.
ALIASES = {name.replace("_", "-"): name for name in FewShotConfig.model_fields if "_" in name}

if __name__ == "__main__":
    cli.run(main, FewShotConfig, prog="python -m audio.fewshot", aliases=ALIASES)
