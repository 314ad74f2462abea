"""core.cli: dotted overrides, aliases, text fields, discriminated unions in --help and errors, cli.run exit codes."""

from typing import Annotated, Literal

import pytest
from pydantic import Field

from core import cli
from core.checkpoint import CheckpointError
from core.config import StrictModel, default_tag
from core.pretrain.step import NonFiniteLossError


class Plain(StrictModel):
    name: Literal["plain"] = Field("plain", description="Which kind.")
    size: int = Field(3, description="Shared size.")


class Fancy(StrictModel):
    name: Literal["fancy", "fancier"] = Field(..., description="Which kind.")
    size: int = Field(3, description="Shared size.")
    sparkle: float = Field(0.5, description="Only the fancy kinds sparkle.")


Kind = Annotated[Plain | Fancy, Field(discriminator="name"), default_tag("name", "plain")]


class Run(StrictModel):
    output: str = Field("out", description="Folder.")
    note: str | None = Field(None, description="Optional text.")
    steps: int = Field(1, description="Steps.")
    resume: bool = Field(True, description="Resume.")


class Config(StrictModel):
    kind: Kind = Field(default_factory=Plain)
    run: Run = Field(default_factory=Run)


ALIASES = {"steps": "run.steps", "output": "run.output", "kind": "kind.name"}


def test_dotted_flags_aliases_and_yaml_values() -> None:
    cfg = cli.load(Config, ["--steps", "5", "--output=runs/a", "--kind", "fancier", "--kind.sparkle", "0.25",
                            "--run.resume", "false"], aliases=ALIASES)
    assert cfg.run.steps == 5 and cfg.run.output == "runs/a" and cfg.run.resume is False
    assert isinstance(cfg.kind, Fancy) and cfg.kind.name == "fancier" and cfg.kind.sparkle == 0.25
    assert cli.expand_aliases(["--steps", "5", "--run.steps", "6", "--other", "7"], ALIASES) == [
        "--run.steps", "5", "--run.steps", "6", "--other", "7"]
    assert cli.load(Config, ["--run.resume"]).run.resume is True  # a bare flag is true
    assert cli.load(Config, []).kind == Plain()  # the default member, without naming it


@pytest.mark.parametrize("text", ["2024", "1.50", "true", "null", "010", "[1, 2]"])
def test_text_fields_keep_the_value_as_typed(text: str) -> None:
    assert cli.load(Config, ["--run.output", text]).run.output == text
    assert cli.load(Config, ["--output", text], aliases=ALIASES).run.output == text


def test_optional_text_field_takes_null_as_none() -> None:
    assert cli.load(Config, ["--run.note", "2024"]).run.note == "2024"
    assert cli.load(Config, ["--run.note", "null"]).run.note is None


def test_union_errors_name_the_key_and_the_member() -> None:
    with pytest.raises(cli.ConfigError, match=r"unknown config key 'kind\.sparkle' for kind\.name 'plain' \(it is a "
                       r"key of kind\.name 'fancy' \| 'fancier'\)"):
        cli.load(Config, ["--kind.sparkle", "1"])
    with pytest.raises(cli.ConfigError, match=r"'kind\.name': expected one of 'plain', 'fancy', 'fancier' "
                       r"\(got 'dull'\)"):
        cli.load(Config, ["--kind.name", "dull"])
    with pytest.raises(cli.ConfigError, match=r"unknown config key 'kind\.glitter' for kind\.name 'fancy'$"):
        cli.load(Config, ["--kind.name", "fancy", "--kind.glitter", "1"])
    with pytest.raises(cli.ConfigError, match=r"'kind\.sparkle': Input should be a valid number"):
        cli.load(Config, ["--kind.name", "fancy", "--kind.sparkle", "much"])
    with pytest.raises(cli.ConfigError, match="unknown config key 'run.stpes'"):
        cli.load(Config, ["--run.stpes", "1"])


def test_help_lists_union_members_and_aliases() -> None:
    text = cli.help_text(Config, "prog", aliases=ALIASES)
    assert "kind (its keys depend on kind.name):" in text
    assert "--kind.name (default: 'plain'; one of plain, fancy, fancier)" in text
    shared, own = text.index("--kind.size"), text.index("[only with kind.name = fancy | fancier]")
    assert shared < own < text.index("--kind.sparkle")  # the shared key first, then the fancy ones
    assert text.count("--kind.size") == 1
    assert "short aliases:" in text and "--steps       = --run.steps" in text
    assert "PydanticUndefined" not in text


def test_parse_help_and_config_errors_exit(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        cli.parse(Config, ["--help"], prog="prog", aliases=ALIASES)
    assert done.value.code == 0 and "--output" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        cli.parse(Config, ["--kind.sparkle", "1"], prog="prog")
    assert bad.value.code == 2 and capsys.readouterr().err.startswith("prog: error: invalid configuration")


@pytest.mark.parametrize(
    "error, code",
    [(cli.ConfigError("bad value"), 2), (CheckpointError("bad checkpoint"), 1), (NonFiniteLossError("loss nan"), 1),
     (FileNotFoundError("no such file"), 1), (ValueError("bad number"), 1)],
)
def test_run_turns_known_errors_into_one_line_and_an_exit_code(capsys: pytest.CaptureFixture,
                                                              error: Exception, code: int) -> None:
    def main(cfg: Config) -> None:
        raise error

    with pytest.raises(SystemExit) as stopped:
        cli.run(main, Config, ["--steps", "2"], prog="prog", aliases=ALIASES)
    assert stopped.value.code == code
    assert capsys.readouterr().err == f"prog: error: {error}\n"


def test_run_returns_main_and_lets_other_errors_through() -> None:
    assert cli.run(lambda cfg: cfg.run.steps, Config, ["--steps", "4"], prog="prog", aliases=ALIASES) == 4

    def main(cfg: Config) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run(main, Config, [], prog="prog")
    with pytest.raises(SystemExit) as stopped:
        cli.run(lambda cfg: None, Config, ["--run.stpes", "1"], prog="prog")
    assert stopped.value.code == 2
