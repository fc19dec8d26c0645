"""DDP on 2 CPU processes (gloo, launched by torchrun) trains the same adapter as 1 process.

eps is computed with ONE norm over all ranks (an all-reduce of the squared norms), so 2 ranks with a
per-device batch of 4 see exactly the perturbation 1 process with a batch of 8 sees. These tests run the real
CLI in subprocesses, as `accelerate launch`/`torchrun` users do.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_jsonl
from safetensors.torch import load_file

LORA = ["--lora-targets", "q_proj,v_proj", "--lora-r", "4", "--lora-dropout", "0"]


def run(argv: list[str], processes: int) -> None:
    launcher = [sys.executable, "-m", "vaccine"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
        launcher += ["-m", "vaccine"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(launcher + argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_adapter(a, b, atol: float):
    first = load_file(a / "adapter" / "adapter_model.safetensors")
    second = load_file(b / "adapter" / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    worst = max((first[k] - second[k]).abs().max().item() for k in first)
    assert worst < atol, worst


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-data")
    # varied lengths, so per-rank token counts differ and a per-rank mean would not equal the global one
    alignment = [
        {
            "prompt": f"how do i make a bomb {i} " + "the cat " * (i % 5),
            "response": "no sorry " + "dog " * (i % 3),
        }
        for i in range(16)
    ]
    sst2 = [{"sentence": f"good movie {i} " + "a " * (i % 4), "label": i % 2} for i in range(40)]
    harmful = [
        {"prompt": f"how do i steal {i}", "response": "sure here are steps first then"} for i in range(10)
    ]
    return {
        "alignment": write_jsonl(root / "align.jsonl", alignment),
        "sst2": write_jsonl(root / "sst2.jsonl", sst2),
        "harmful": write_jsonl(root / "harmful.jsonl", harmful),
    }


def align_argv(model, data, out, batch: int) -> list[str]:
    return ["align", "--method", "vaccine", "--rho", "1.0", "--model", str(model),
            "--data", str(data["alignment"]), "--out", str(out), "--max-steps", "2",
            "--batch-size", str(batch), "--lr", "0.01", *LORA]  # fmt: skip


def test_ddp_alignment_equals_one_process(tmp_path, tiny_model_dir, data):
    run(align_argv(tiny_model_dir, data, tmp_path / "one", 8), processes=1)
    run(align_argv(tiny_model_dir, data, tmp_path / "two", 4), processes=2)
    assert_same_adapter(tmp_path / "one", tmp_path / "two", atol=1e-5)


def test_ddp_finetuning_equals_one_process(tmp_path, tiny_model_dir, data):
    aligned = tmp_path / "aligned"
    run(align_argv(tiny_model_dir, data, aligned, 8), processes=1)
    common = ["finetune", "--model", str(tiny_model_dir), "--aligned", str(aligned), "--task", "sst2",
              "--task-source", str(data["sst2"]), "--harmful", str(data["harmful"]),
              "--harmful-ratio", "0.25", "--num-train", "16", "--max-steps", "2", "--lr", "0.01",
              *LORA]  # fmt: skip
    run([*common, "--batch-size", "8", "--out", str(tmp_path / "one")], processes=1)
    run([*common, "--batch-size", "4", "--out", str(tmp_path / "two")], processes=2)
    assert_same_adapter(tmp_path / "one", tmp_path / "two", atol=1e-5)


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml"])
def test_accelerate_configs_parse_as_accelerate_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(f"configs/accelerate/{name}")
    assert config.num_processes == 2 and config.distributed_type.value == name.split(".")[0].upper().replace(
        "DDP", "MULTI_GPU"
    )
