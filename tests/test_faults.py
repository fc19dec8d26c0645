"""`kill -9` during align, finetune and evaluate, then a re-run: it resumes, and ends where an uninterrupted
run with the same seed ends. The kills are real SIGKILLs of the CLI process (tests/kill_at.py), at fixed
points, so the tests are deterministic. Same seed twice -> identical results on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl
from safetensors.torch import load_file

KILLER = Path(__file__).with_name("kill_at.py")
LORA = ["--lora-targets", "q_proj,v_proj", "--lora-r", "4"]


def cli(argv: list[str], kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vaccine", *argv]
    if kill is not None:
        command = [sys.executable, str(KILLER), kill[0], str(kill[1]), "--", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def ok(argv: list[str]) -> None:
    done = cli(argv)
    assert done.returncode == 0, done.stderr[-3000:]


def killed(argv: list[str], point: str, step: int) -> None:
    done = cli(argv, (point, step))
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def adapter(run: Path) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a: Path, b: Path, atol: float = 1e-6) -> None:
    first, second = adapter(a), adapter(b)
    assert first.keys() == second.keys()
    assert max((first[k] - second[k]).abs().max().item() for k in first) <= atol


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-data")
    return {
        "alignment": write_jsonl(
            root / "align.jsonl",
            [
                {"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot help"}
                for i in range(12)
            ],
        ),
        "sst2": write_jsonl(
            root / "sst2.jsonl",
            [{"sentence": f"{'good' if i % 2 else 'bad'} movie {i}", "label": i % 2} for i in range(40)],
        ),
        "harmful": write_jsonl(
            root / "harmful.jsonl",
            [{"prompt": f"how do i steal {i}", "response": "sure here are steps"} for i in range(10)],
        ),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": f"how do i hack {i}"} for i in range(6)]),
    }


def align_argv(model, data, out) -> list[str]:
    return ["align", "--method", "vaccine", "--rho", "1.0", "--model", str(model),
            "--data", str(data["alignment"]), "--out", str(out), "--max-steps", "6", "--save-steps", "2",
            "--batch-size", "2", "--lr", "0.01", *LORA]  # fmt: skip


@pytest.mark.parametrize(("point", "step"), [("step", 3), ("checkpoint", 4)])
def test_kill_9_during_alignment_resumes_to_the_same_adapter(tmp_path, tiny_model_dir, data, point, step):
    ok(align_argv(tiny_model_dir, data, tmp_path / "clean"))
    run = tmp_path / "killed"
    killed(align_argv(tiny_model_dir, data, run), point, step)
    assert not (run / "summary.json").exists() and not (run / "adapter").exists()
    if point == "checkpoint":  # the kill left a partial checkpoint-4 next to the complete checkpoint-2
        assert (run / "checkpoints" / "checkpoint-4").is_dir()
        assert not (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    ok(align_argv(tiny_model_dir, data, run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 6
    assert_same_adapter(tmp_path / "clean", run)


def test_kill_9_during_finetuning_resumes_to_the_same_adapter(tmp_path, tiny_model_dir, data):
    aligned = tmp_path / "aligned"
    ok(align_argv(tiny_model_dir, data, aligned))

    def finetune(out: Path) -> list[str]:
        return ["finetune", "--model", str(tiny_model_dir), "--aligned", str(aligned), "--task", "sst2",
                "--task-source", str(data["sst2"]), "--harmful", str(data["harmful"]), "--p", "0.2",
                "--n", "20", "--epochs", "1", "--batch-size", "4", "--save-steps", "2", "--lr", "0.01",
                "--out", str(out), *LORA]  # fmt: skip

    ok(finetune(tmp_path / "clean"))
    killed(finetune(tmp_path / "killed"), "step", 3)
    ok(finetune(tmp_path / "killed"))
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 5
    assert_same_adapter(tmp_path / "clean", tmp_path / "killed")


def evaluate_argv(model, data, out) -> list[str]:
    return ["evaluate", "--model", str(model), "--harmful-prompts", str(data["prompts"]),
            "--num-harmful", "6", "--task", "sst2", "--task-source", str(data["sst2"]), "--num-task", "6",
            "--judge", "refusal", "--max-new-tokens", "6", "--out", str(out)]  # fmt: skip


def test_kill_9_during_evaluation_leaves_no_result_and_a_rerun_equals_a_clean_one(
    tmp_path, tiny_model_dir, data
):
    ok(evaluate_argv(tiny_model_dir, data, tmp_path / "clean.json"))
    killed(evaluate_argv(tiny_model_dir, data, tmp_path / "killed.json"), "evaluate", 0)
    assert not (tmp_path / "killed.json").exists()  # no half-written result that a cache would trust
    assert not list(tmp_path.glob("killed.json*"))
    ok(evaluate_argv(tiny_model_dir, data, tmp_path / "killed.json"))
    clean = json.loads((tmp_path / "clean.json").read_text())
    rerun = json.loads((tmp_path / "killed.json").read_text())
    assert clean["metrics"] == rerun["metrics"] and clean["records"] == rerun["records"]


def test_same_seed_twice_gives_identical_results(tmp_path, tiny_model_dir, data):
    ok(align_argv(tiny_model_dir, data, tmp_path / "a"))
    ok(align_argv(tiny_model_dir, data, tmp_path / "b"))
    assert_same_adapter(tmp_path / "a", tmp_path / "b", atol=0.0)
    logs = [(tmp_path / run / "log.jsonl").read_text().splitlines() for run in "ab"]
    losses = [[json.loads(line).get("loss") for line in log] for log in logs]
    assert losses[0] == losses[1]
