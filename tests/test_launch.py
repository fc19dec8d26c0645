"""A grid's training stage given several GPUs runs as `accelerate launch -m vaccine <stage> FLAGS`: the flags
must rebuild exactly the spec the grid planned, and the launch must leave a finished stage."""

from __future__ import annotations

import json
import os
import socket

import pytest
from conftest import write_jsonl

from vaccine.cli import build_parser
from vaccine.errors import VaccineError
from vaccine.experiments import launch
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.launch import launch_command, launch_stage, stage_flags
from vaccine.experiments.stages import plan_cell
from vaccine.settings import from_flags

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture
def plans(tmp_path, tiny_model_dir):
    """A Vaccine cell (method knobs, a shared self-distillation cache) with a defense that has knobs, and a
    post-hoc repair: every kind of field a stage spec has (paths, lists, dicts, optional values)."""
    refusals = [{"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot"} for i in range(10)]
    align = str(write_jsonl(tmp_path / "align.jsonl", refusals))
    reviews = [{"sentence": f"good movie {i}", "label": i % 2} for i in range(40)]
    sst2 = str(write_jsonl(tmp_path / "sst2.jsonl", reviews))
    grid = parse_grid(
        {
            "out": str(tmp_path / "runs"),
            "models": [str(tiny_model_dir)],
            "tasks": ["sst2"],
            "p": [0.5],
            "n": [8],
            "methods": [
                {
                    "label": "Vaccine + Antidote",
                    "align": {"method": "vaccine", "rho": 1.5, "perturbation_norm": "sample"},
                    "finetune": {"defense": "ewc", "lam": 0.5},
                    "posthoc": {"method": "antidote", "ratio": 0.2},
                }
            ],
            "align": {"data": align, "num_samples": 8, "max_steps": 2, "batch_size": 2, "save_steps": 1},
            "finetune": {"max_steps": 2, "batch_size": 2, "task_source": sst2, "alignment_data": align},
            "lora": LORA,
            "template": "alpaca",
        }
    )
    return [plan_cell(grid, cell) for cell in grid.cells()]


@pytest.mark.parametrize("stage", ["align", "finetune", "posthoc"])
def test_the_flags_rebuild_the_planned_spec(plans, stage):
    spec = getattr(plans[0], stage)
    flags = stage_flags(spec)
    assert "--p" not in flags and "--n" not in flags  # launchers take these for their own flags
    args = build_parser(stage).parse_args([stage, *flags])
    rebuilt, planned = from_flags(type(spec), args).to_dict(), spec.to_dict()
    knobs = "defense_args" if stage == "finetune" else "method_args"  # as typed: text, as on a command line
    assert rebuilt.pop(knobs) == {key: str(value) for key, value in planned.pop(knobs).items()}
    assert rebuilt == planned  # the resolved knobs (method_knobs, defense_knobs) included


def test_the_launch_command_spans_the_gpus_of_one_machine(plans):
    command = launch_command("finetune", plans[0].finetune, 4)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4" and "--multi_gpu" in command
    assert command[command.index("-m", 3) :][:3] == ["-m", "vaccine", "finetune"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_launched_stage_ends_done_with_the_planned_config(plans, tmp_path, monkeypatch):
    """The real launcher with 2 CPU processes (gloo) in place of 2 GPUs: the stage finishes and its
    config.json is the one the grid planned."""
    spec = plans[0].align
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nnum_machines: 1\n"
        "num_processes: 2\nmixed_precision: 'no'\nuse_cpu: true\n"
    )
    port = str(free_port())
    monkeypatch.setattr(
        launch,
        "launcher_args",
        lambda n: ["--config_file", str(cpu), "--num_processes", str(n), "--main_process_port", port],
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch_stage("align", spec, 2)
    assert (spec.out / "summary.json").is_file()
    written = json.loads((spec.out / "config.json").read_text())
    assert written["method_knobs"] == json.loads(json.dumps(spec.to_dict()["method_knobs"]))
    assert written["out"] == str(spec.out) and written["template"] == "alpaca"


def test_a_failed_launch_names_the_stage(plans, monkeypatch):
    monkeypatch.setattr(launch, "launcher_args", lambda n: ["--no-such-flag"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(VaccineError, match=r"accelerate launch of `vaccine finetune` into .* failed"):
        launch_stage("finetune", plans[0].finetune, 2)
    assert not os.path.exists(plans[0].finetune.out / "summary.json")
