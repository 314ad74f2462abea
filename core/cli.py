"""Command-line parsing for pydantic configs: an optional JSON/YAML file plus dotted flag overrides.

``python -m vision.pretrain --config run.yaml --optim.lr 0.1 --method.name mocov2`` reads the file, applies the
overrides (``--a.b value`` or ``--a.b=value``; dashes in names may be written as underscores or dashes), and
validates the result with ``model_validate``. An entry point may also accept short aliases (``--steps 5`` for
``--run.steps 5``). ``--help`` lists every field with its description and default (``required`` for a field
without one), the variants of each discriminated union (which ``name`` a key belongs to) and the aliases.

A flag value is read as a YAML scalar (``0.1``, ``true``, ``null``, ``[1, 2]``) unless the key it sets is a text
field, which keeps the text as typed (``--run.output 2024`` is the folder ``"2024"``).
An unknown key or an invalid value exits with status 2 and a message naming the key; :func:`run` also turns the
errors a run raises (a checkpoint that does not fit, a non-finite loss, a missing file, an invalid value) into a
one-line message and exit status 1.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ResultT = TypeVar("ResultT")


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


# ---------------------------------------------------------------------------------------------- model structure
def _variants(field: FieldInfo) -> list[type[BaseModel]]:
    """The config models a field holds: its own model, each member of a union of models, or none (a value)."""
    annotation = field.annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _discriminator(field: FieldInfo) -> str | None:
    """The key that picks a union member (``Field(discriminator="name")``), or ``None``."""
    return field.discriminator if isinstance(field.discriminator, str) and len(_variants(field)) > 1 else None


def _tags(variant: type[BaseModel], key: str) -> tuple[str, ...]:
    """The values of ``key`` that select ``variant`` (the arguments of its ``Literal``)."""
    return tuple(str(v) for v in get_args(variant.model_fields[key].annotation))


def _is_text(annotation: Any) -> bool:
    """``str`` or ``str | None``: a field whose flag value is kept as typed."""
    if annotation is str:
        return True
    members = set(get_args(annotation)) if get_origin(annotation) in (Union, types.UnionType) else set()
    return str in members and members <= {str, type(None)}


def _leaf_fields(model: type[BaseModel], keys: Sequence[str]) -> list[FieldInfo]:
    """The fields a dotted key can name, in every union member on the way (none for an unknown key)."""
    models = [model]
    for key in keys[:-1]:
        models = [v for m in models if key in m.model_fields for v in _variants(m.model_fields[key])]
    return [m.model_fields[keys[-1]] for m in models if keys[-1] in m.model_fields]


# ---------------------------------------------------------------------------------------------- argv
def expand_aliases(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """Rewrite short flags (``--dataset x``, ``--data-root=x``) to their dotted keys; other arguments pass."""
    out = []
    for arg in argv:
        key, eq, value = arg[2:].partition("=")
        if arg.startswith("--") and "." not in key and key in aliases:
            arg = f"--{aliases[key]}{eq}{value}"
        out.append(arg)
    return out


def _parse_value(text: str, fields: Sequence[FieldInfo] = ()) -> object:
    """A YAML scalar (``0.1`` → float, ``true`` → bool, ``null`` → None, ``[1, 2]`` → list), or the text itself for
    a text field (``null`` still gives None where the field allows it)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if fields and all(_is_text(f.annotation) for f in fields):
        nullable = all(f.annotation is not str for f in fields)
        return None if nullable and value is None and text.strip() else text
    return value


def _set_dotted(data: dict, keys: Sequence[str], value: object, flag: str) -> None:
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--{flag}: {key} is a value, not a section")
    node[keys[-1]] = value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def overrides_from_argv(argv: Sequence[str], model: type[BaseModel] | None = None) -> tuple[str | None, dict]:
    """Split ``argv`` into the ``--config`` path and a nested dict of dotted overrides.

    Args:
        argv: Flags, ``--a.b value`` or ``--a.b=value``; a flag without a value is ``true``.
        model: The config the overrides are for; its text fields keep their values as typed.
    """
    config_path = None
    data: dict = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}; options look like --section.key value")
        flag, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and not _is_number(args[i + 1])):
                value = "true"  # a bare flag: --run.resume
            else:
                i += 1
                value = args[i]
        if flag == "config":
            config_path = value
        else:
            keys = flag.replace("-", "_").split(".")
            fields = _leaf_fields(model, keys) if model is not None else []
            _set_dotted(data, keys, _parse_value(value, fields), flag)
        i += 1
    return config_path, data


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------------------------- help
def _leaf_lines(name: str, field: FieldInfo, prefix: str) -> list[str]:
    default = "required" if field.is_required() else f"default: {field.get_default(call_default_factory=True)!r}"
    lines = [f"  --{prefix}{name} ({default})"]
    if field.description:
        lines.append(f"      {field.description}")
    return lines


def _union_lines(name: str, field: FieldInfo, prefix: str, key: str) -> list[str]:
    """A discriminated union's keys: the ones all members share, then each member's own, with their ``key``."""
    variants = _variants(field)
    tags = [t for v in variants for t in _tags(v, key)]
    lines = [f"{prefix}{name} (its keys depend on {prefix}{name}.{key}):"]
    owners: dict[str, list[type[BaseModel]]] = {}
    for variant in variants:
        for field_name in variant.model_fields:
            owners.setdefault(field_name, []).append(variant)
    default = field.get_default(call_default_factory=True)
    tag_field = variants[0].model_fields[key]
    lines.append(f"  --{prefix}{name}.{key} (default: {getattr(default, key, None)!r}; one of {', '.join(tags)})")
    if tag_field.description:
        lines.append(f"      {tag_field.description}")
    groups: dict[tuple[type[BaseModel], ...], list[str]] = {}
    for field_name, holders in owners.items():
        if field_name != key:
            groups.setdefault(tuple(holders), []).append(field_name)
    for holders, names in groups.items():
        if len(holders) < len(variants):
            members = " | ".join(t for v in holders for t in _tags(v, key))
            lines.append(f"  [only with {prefix}{name}.{key} = {members}]")
        for field_name in names:
            lines += _field_lines(field_name, holders[0].model_fields[field_name], f"{prefix}{name}.")
    return lines


def _field_lines(name: str, field: FieldInfo, prefix: str) -> list[str]:
    variants = _variants(field)
    key = _discriminator(field)
    if key is not None:
        return _union_lines(name, field, prefix, key)
    if len(variants) == 1 and field.annotation is variants[0]:
        return [f"{prefix}{name}:", help_text(variants[0], "", prefix=f"{prefix}{name}.")]
    return _leaf_lines(name, field, prefix)


def help_text(model: type[BaseModel], prog: str, prefix: str = "", aliases: Mapping[str, str] | None = None) -> str:
    """Every field, dotted, with its default (or ``required``) and description; then the short aliases."""
    lines = [f"usage: {prog} [--config FILE.json|yaml] [--section.key VALUE ...]", ""] if not prefix else []
    for name, field in model.model_fields.items():
        lines += _field_lines(name, field, prefix)
    if aliases:
        lines += ["", "short aliases:"] + [f"  --{short:<11} = --{dotted}" for short, dotted in aliases.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- errors
def _locate(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[str, str, str]:
    """A pydantic error location as ``(dotted key, union choice, owners)``.

    The dotted key leaves out pydantic's union tags; the choice names the union member the key was checked in
    (``method.name 'simclr'``); owners names the members that do hold the last key (``method.name 'mocov2'``).
    """
    parts: list[str] = []
    models, choice, owners = [model], "", ""
    items = list(loc)
    while items:
        key = items.pop(0)
        parts.append(str(key))
        fields = [m.model_fields[key] for m in models if isinstance(key, str) and key in m.model_fields]
        models = _variants(fields[0]) if fields else []
        discriminator = _discriminator(fields[0]) if fields else None
        if discriminator is not None and items:
            tag, section = str(items.pop(0)), ".".join(parts)
            choice = f"{section}.{discriminator} {tag!r}"
            holders = [t for v in models if len(items) == 1 and items[0] in v.model_fields
                       for t in _tags(v, discriminator)]
            owners = f"{section}.{discriminator} {' | '.join(map(repr, holders))}" if holders else ""
            models = [v for v in models if tag in _tags(v, discriminator)]
    return ".".join(parts), choice, owners


def format_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line naming each invalid key (dotted, without pydantic's union tags) and what is wrong with it."""
    parts = []
    for e in err.errors():
        if model is not None:
            where, choice, owners = _locate(model, e["loc"])
        else:
            where, choice, owners = ".".join(str(p) for p in e["loc"]), "", ""
        where = where or "config"
        if e["type"] == "extra_forbidden":
            message = f"unknown config key '{where}'" + (f" for {choice}" if choice else "")
            parts.append(message + (f" (it is a key of {owners})" if owners else ""))
        elif e["type"] == "union_tag_invalid":
            key = e["ctx"]["discriminator"].strip("'")
            parts.append(f"'{where}.{key}': expected one of {e['ctx']['expected_tags']} (got {e['ctx']['tag']!r})")
        else:
            parts.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- entry points
def load(model: type[ConfigT], argv: Sequence[str], aliases: Mapping[str, str] | None = None) -> ConfigT:
    """Build a config from argv (short ``aliases`` expanded); raises :class:`ConfigError` with a readable message."""
    config_path, overrides = overrides_from_argv(expand_aliases(argv, aliases or {}), model)
    data = read_config_file(config_path) if config_path else {}
    try:
        return model.model_validate(_merge(data, overrides))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model)) from None


def parse(model: type[ConfigT], argv: Sequence[str] | None = None, prog: str | None = None,
          aliases: Mapping[str, str] | None = None) -> ConfigT:
    """Entry-point helper: ``--help`` prints the fields and aliases; errors print one line and exit with status 2.

    Args:
        model: The entry point's config.
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The program name in messages (default: ``sys.argv[0]``'s file name).
        aliases: Short flags and the dotted keys they stand for, e.g. ``{"steps": "run.steps"}``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or Path(sys.argv[0]).name
    if "-h" in argv or "--help" in argv:
        print(help_text(model, prog, aliases=aliases))
        raise SystemExit(0)
    try:
        return load(model, argv, aliases)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def run_errors() -> tuple[type[BaseException], ...]:
    """The errors :func:`run` reports in one line with exit status 1 (imported here, not at module load)."""
    from core.checkpoint import CheckpointError
    from core.pretrain.step import NonFiniteLossError

    return CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError


def run(main: Callable[[ConfigT], ResultT], model: type[ConfigT], argv: Sequence[str] | None = None,
        prog: str | None = None, aliases: Mapping[str, str] | None = None) -> ResultT:
    """The ``__main__`` of an entry point: parse the config, call ``main(cfg)``, report errors in one line.

    ``python -m vision.pretrain`` is ``cli.run(main, PretrainConfig, prog="python -m vision.pretrain")``.

    Args:
        main: The entry point's ``main(cfg)``.
        model: Its config; see :func:`parse` for ``argv``, ``prog`` and ``aliases``.

    Returns:
        What ``main`` returns.

    Raises:
        SystemExit: 0 after ``--help``; 2 for a :class:`ConfigError` (while parsing or raised by ``main``); 1 for
            :class:`core.checkpoint.CheckpointError`, :class:`core.pretrain.step.NonFiniteLossError`,
            ``FileNotFoundError`` or ``ValueError``, each printed as ``{prog}: error: {message}`` on stderr.
    """
    prog = prog or Path(sys.argv[0]).name
    cfg = parse(model, argv, prog=prog, aliases=aliases)
    try:
        return main(cfg)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except run_errors() as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
