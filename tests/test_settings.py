"""One source of truth per setting: every CLI flag and every grid key is one dataclass field, with that
field's default; errors name the setting as the user wrote it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING
from pathlib import Path

import pytest

from vaccine.align import AlignSpec
from vaccine.cli import build_parser, main
from vaccine.evaluate import EvaluateSpec
from vaccine.experiments.grid import SECTIONS, ReportSettings, TsneSettings, parse_grid
from vaccine.finetune import FinetuneSpec
from vaccine.lora import LoraSettings
from vaccine.posthoc import PosthocSpec
from vaccine.settings import ModelSettings, add_flags, from_flags, setting


def _parsers(parser: argparse.ArgumentParser, name: str = "vaccine"):
    """Every (sub-)command parser that has a spec, with its name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")
    if parser.get_default("spec") is not None:
        yield name, parser


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


COMMANDS = dict(_parsers(build_parser()))


def test_every_command_with_flags_has_a_spec():
    assert {"vaccine align", "vaccine finetune", "vaccine evaluate", "vaccine tsne", "vaccine run"} <= set(
        COMMANDS
    )
    assert {"vaccine judge", "vaccine judge score", "vaccine judge validate", "vaccine report"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_is_one_field_with_its_default(command):
    parser = COMMANDS[command]
    spec = parser.get_default("spec")
    fields = {f.name: f for f in dataclasses.fields(spec)}
    dests = [
        a.dest for a in parser._actions if a.dest not in ("help", "action") and a.default != "==SUPPRESS=="
    ]
    dests = [
        d for d in dests if not isinstance(parser._option_string_actions.get(d), argparse._SubParsersAction)
    ]
    assert len(dests) == len(set(dests)), "two flags write one field"
    assert set(dests) == {f.name for f in fields.values() if f.metadata.get("cli", True)}
    for action in parser._actions:
        if action.dest in fields:
            field = fields[action.dest]
            expected = (
                None if field.default_factory is not MISSING or field.default is MISSING else field.default
            )
            assert action.default == expected, (
                f"{command} {action.option_strings}: default differs from the field"
            )
            assert action.help == field.metadata["help"]


SECTION_SPECS = {
    "align": AlignSpec,
    "finetune": FinetuneSpec,
    "posthoc": PosthocSpec,
    "evaluate": EvaluateSpec,
    "lora": LoraSettings,
    "tsne": TsneSettings,
    "report": ReportSettings,
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_grid_key_is_one_field_with_its_default(section):
    fields = {f.name: f for f in dataclasses.fields(SECTION_SPECS[section])}
    for key, value in SECTIONS[section]().items():
        if section == "align" and key == "lora":  # the alignment's own LoRA: the `lora` section's keys
            continue
        assert key in fields, f"{section}.{key} is no field of {SECTION_SPECS[section].__name__}"
        assert value == _default(fields[key])


def test_shared_settings_keep_one_default():
    grid = parse_grid(
        {"models": ["m"], "tasks": ["sst2"], "p": [0.1], "n": [10], "methods": [{"label": "A"}]}
    )
    model_defaults = {f.name: f.default for f in dataclasses.fields(ModelSettings)}
    assert (grid.template, grid.dtype) == (model_defaults["template"], model_defaults["dtype"])
    assert FinetuneSpec.__dataclass_fields__["lora_r"].default == LoraSettings.r
    assert (
        AlignSpec.__dataclass_fields__["save_steps"].default
        == FinetuneSpec.__dataclass_fields__["save_steps"].default
    )
    assert grid.evaluate["batch_size"] == EvaluateSpec.__dataclass_fields__["batch_size"].default


@dataclasses.dataclass(kw_only=True)
class Example:
    name: Path = setting(help="a positional path", positional=True)
    knobs: dict = setting(factory=dict, help="KEY=VALUE", flag="--knob")
    adapters: list[Path] = setting(factory=list, help="repeatable", flag="--adapter")
    views: list[tuple[str, str]] = setting(factory=list, help="pairs", flag="--view", metavar=("A", "B"))
    targets: list[str] | None = setting(None, "names")
    count: int | None = setting(None, "a number", aliases=("--how-many",))
    on: bool = setting(False, "a switch")


def test_flags_round_trip_into_the_dataclass():
    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    argv = ["x", "--knob", "a=1", "--knob", "b=two", "--adapter", "p", "--adapter", "q"]
    argv += ["--view", "l", "m", "--targets", "t", "--how-many", "3", "--on"]
    parsed = from_flags(Example, parser.parse_args(argv))
    assert parsed == Example(
        name=Path("x"),
        knobs={"a": "1", "b": "two"},
        adapters=[Path("p"), Path("q")],
        views=[["l", "m"]],
        targets=["t"],
        count=3,
        on=True,
    )
    assert from_flags(Example, parser.parse_args(["x"])) == Example(name=Path("x"))
    with pytest.raises(SystemExit):
        parser.parse_args(["x", "--knob", "novalue"])


def test_errors_name_the_flag_on_the_cli(tmp_path, capsys):
    code = main(["finetune", "--out", str(tmp_path / "f"), "--harmful-ratio", "1.5"])
    assert code == 2
    assert "error: --p: the harmful ratio must be in [0, 1]" in capsys.readouterr().err
    code = main(["evaluate", "--out", str(tmp_path / "e.json"), "--num-task", "0"])
    assert code == 2
    assert "error: --num-task: must be >= 1" in capsys.readouterr().err


def test_errors_name_the_yaml_path_in_a_grid(tmp_path):
    from vaccine.errors import ConfigError
    from vaccine.experiments.stages import plan_cell

    raw = {
        "models": ["m"],
        "tasks": ["sst2"],
        "p": [0.1],
        "n": [10],
        "methods": [{"label": "S", "align": {"method": "sft"}}],
    }
    grid = parse_grid({**raw, "align": {"num_samples": 0}}, "exp.yaml")
    with pytest.raises(ConfigError, match=r"^exp.yaml: align.num_samples: must be >= 1"):
        plan_cell(grid, grid.cells()[0])
