"""Command-line parsing for pydantic configs: an optional JSON/YAML file plus dotted flag overrides.

``python -m vision.pretrain --config run.yaml --optim.lr 0.1 --method.name mocov2`` reads the file, applies the
overrides (``--a.b value`` or ``--a.b=value``; dashes in names may be written as underscores or dashes), and
validates the result with ``model_validate``. ``--help`` lists every field with its description and default
(``required`` for a field without one).
An unknown key or an invalid value exits with status 2 and a message naming the key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used, with a message for the user."""


def read_config_file(path: str | Path) -> dict:
    """Read a JSON or YAML mapping. Raises :class:`ConfigError` for a missing file or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def _set_dotted(data: dict, dotted: str, value: object) -> None:
    keys = dotted.replace("-", "_").split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--{dotted}: {key} is a value, not a section")
    node[keys[-1]] = value


def _parse_value(text: str) -> object:
    """YAML scalars: ``0.1`` → float, ``true`` → bool, ``null`` → None, ``[1, 2]`` → list, else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def overrides_from_argv(argv: Sequence[str]) -> tuple[str | None, dict]:
    """Split ``argv`` into the ``--config`` path and a nested dict of dotted overrides."""
    config_path = None
    data: dict = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}; options look like --section.key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and not _is_number(args[i + 1])):
                value = "true"  # a bare flag: --run.resume
            else:
                i += 1
                value = args[i]
        if key == "config":
            config_path = value
        else:
            _set_dotted(data, key, _parse_value(value))
        i += 1
    return config_path, data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def help_text(model: type[BaseModel], prog: str, prefix: str = "") -> str:
    """Every field, dotted, with its default (or ``required``) and description."""
    lines = [f"usage: {prog} [--config FILE.json|yaml] [--section.key VALUE ...]", ""] if not prefix else []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{prefix}{name}:")
            lines.append(help_text(annotation, prog, prefix=f"{prefix}{name}."))
            continue
        if field.is_required():
            lines.append(f"  --{prefix}{name} (required)")
        else:
            lines.append(f"  --{prefix}{name} (default: {field.get_default(call_default_factory=True)!r})")
        if field.description:
            lines.append(f"      {field.description}")
    return "\n".join(lines)


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown config key '{where}'")
        else:
            parts.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)


def load(model: type[ConfigT], argv: Sequence[str]) -> ConfigT:
    """Build a config from argv; raises :class:`ConfigError` with a readable message."""
    config_path, overrides = overrides_from_argv(argv)
    data = read_config_file(config_path) if config_path else {}
    try:
        return model.model_validate(_merge(data, overrides))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def parse(model: type[ConfigT], argv: Sequence[str] | None = None, prog: str | None = None) -> ConfigT:
    """Entry-point helper: ``--help`` prints the fields; errors print one line and exit with status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or Path(sys.argv[0]).name
    if "-h" in argv or "--help" in argv:
        print(help_text(model, prog))
        raise SystemExit(0)
    try:
        return load(model, argv)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
