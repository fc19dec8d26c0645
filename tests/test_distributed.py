"""DDP and FSDP on 2 CPU processes (gloo) train the same adapter as 1 process.

eps is computed with ONE norm over all ranks (an all-reduce of the squared norms), so 2 ranks with a
per-device batch of 4 see exactly the perturbation 1 process with a batch of 8 sees. Under FSDP each rank
holds a shard of every weight, LoRA's included; the adapter is gathered before rank 0 writes it. These tests
run the real CLI in subprocesses, as `torchrun` and `accelerate launch` users do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_jsonl
from safetensors.torch import load_file

LORA = ["--lora-targets", "q_proj,v_proj", "--lora-r", "4", "--lora-dropout", "0"]


REPO = Path(__file__).resolve().parents[1]


def cpu_config(name: str, folder: Path, mixed_precision: str = "no") -> Path:
    """configs/accelerate/<name> as shipped, changed only where CPUs differ: CPU processes, and no bf16
    unless asked (bf16 rounding would hide the exact agreement with one process)."""
    config = yaml.safe_load((REPO / "configs/accelerate" / name).read_text())
    config.update(mixed_precision=mixed_precision, use_cpu=True)
    path = folder / f"cpu-{mixed_precision}-{name}"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A port nobody listens on: launches that follow each other must not meet the last one's socket."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launcher(kind: str, folder: Path) -> list[str]:
    """``one``: a plain process; ``ddp``: accelerate launch with the DDP config (2 processes); ``fsdp``: with
    the FSDP config, through tests/fsdp_on_cpu.py, which lets accelerate shard on CPUs; ``fsdp-bf16``: the
    same with bf16 mixed precision, as shipped; ``fsdp-unpatched``: the FSDP config without the launcher
    (accelerate then falls back to DDP on CPUs)."""
    if kind == "one":
        return [sys.executable, "-m", "vaccine"]
    precision = "bf16" if kind.endswith("bf16") else "no"
    config = cpu_config("ddp.yaml" if kind == "ddp" else "fsdp.yaml", folder, precision)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                  "--main_process_port", str(free_port())]  # fmt: skip
    if kind.startswith("fsdp") and kind != "fsdp-unpatched":
        return [*accelerate, str(REPO / "tests/fsdp_on_cpu.py")]
    return [*accelerate, "-m", "vaccine"]


def quiet_env() -> dict[str, str]:
    """One thread per process: 2 processes on 2 cores, not 2 x 2 threads fighting over them."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(argv: list[str], kind: str, folder: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        launcher(kind, folder) + argv, env=quiet_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


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


def align_argv(model, data, out, batch: int, steps: int = 2) -> list[str]:
    return ["align", "--method", "vaccine", "--rho", "1.0", "--model", str(model),
            "--data", str(data["alignment"]), "--out", str(out), "--max-steps", str(steps),
            "--batch-size", str(batch), "--lr", "0.01", "--save-steps", "2", *LORA]  # fmt: skip


def finetune_argv(model, data, aligned, out, batch: int) -> list[str]:
    return ["finetune", "--model", str(model), "--aligned", str(aligned), "--task", "sst2",
            "--task-source", str(data["sst2"]), "--harmful", str(data["harmful"]), "--out", str(out),
            "--harmful-ratio", "0.25", "--num-train", "16", "--max-steps", "2", "--lr", "0.01",
            "--batch-size", str(batch), "--save-steps", "1", *LORA]  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir, data):
    """Alignment and fine-tuning in one process with the global batch (8): what 2 ranks x 4 must match."""
    root = tmp_path_factory.mktemp("one-process")
    run(align_argv(tiny_model_dir, data, root / "aligned", 8), "one", root)
    run(finetune_argv(tiny_model_dir, data, root / "aligned", root / "finetuned", 8), "one", root)
    return root


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_alignment_on_two_processes_equals_one_process(tmp_path, tiny_model_dir, data, one_process, kind):
    done = run(align_argv(tiny_model_dir, data, tmp_path / "two", 4), kind, tmp_path)
    assert_same_adapter(one_process / "aligned", tmp_path / "two", atol=1e-5)
    assert done.stdout.count('"vaccine_version"') == 1  # one summary, from rank 0


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_finetuning_on_two_processes_equals_one_process(tmp_path, tiny_model_dir, data, one_process, kind):
    argv = finetune_argv(tiny_model_dir, data, one_process / "aligned", tmp_path / "two", 4)
    run(argv, kind, tmp_path)
    assert_same_adapter(one_process / "finetuned", tmp_path / "two", atol=1e-5)
    # FSDP really sharded: its checkpoints are distributed (one shard file per rank), DDP's are not
    sharded = tmp_path / "two" / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0"
    assert sharded.is_dir() == (kind == "fsdp")


def test_fsdp_with_bf16_mixed_precision_trains_close_to_fp32(tmp_path, tiny_model_dir, data, one_process):
    """The shipped config computes in bf16 (fp32 master weights): the adapter stays fp32 and lands within
    bf16 rounding of the fp32 one. lora_B starts at zero, so its value is the whole update."""
    run(align_argv(tiny_model_dir, data, tmp_path / "two", 4), "fsdp-bf16", tmp_path)
    fp32 = load_file(one_process / "aligned" / "adapter" / "adapter_model.safetensors")
    bf16 = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    for name in (name for name in fp32 if "lora_B" in name):
        assert bf16[name].dtype == torch.float32
        relative = ((bf16[name] - fp32[name]).norm() / fp32[name].norm()).item()
        assert 0 < relative < 0.1, (name, relative)  # 0: bf16 was not applied at all


def test_fsdp_config_on_cpus_warns_that_it_trains_as_ddp(tmp_path, tiny_model_dir, data, one_process):
    done = run(align_argv(tiny_model_dir, data, tmp_path / "two", 4), "fsdp-unpatched", tmp_path)
    assert "an FSDP config was given but accelerate runs MULTI_CPU" in done.stderr
    assert_same_adapter(one_process / "aligned", tmp_path / "two", atol=1e-5)


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml"])
def test_accelerate_configs_parse_as_accelerate_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(f"configs/accelerate/{name}")
    assert config.num_processes == 2 and config.distributed_type.value == name.split(".")[0].upper().replace(
        "DDP", "MULTI_GPU"
    )


def test_fsdp_run_killed_mid_training_resumes_to_the_uninterrupted_adapter(tmp_path, tiny_model_dir, data):
    """kill -9 during step 3 (of 4) on both ranks; the re-run resumes from the sharded checkpoint-2."""
    run(align_argv(tiny_model_dir, data, tmp_path / "one", 8, steps=4), "one", tmp_path)
    argv = align_argv(tiny_model_dir, data, tmp_path / "two", 4, steps=4)
    kill_during_step_3 = [*launcher("fsdp", tmp_path), "--kill-at", "step", "2", *argv]
    killed = subprocess.run(kill_during_step_3, env=quiet_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and not (tmp_path / "two" / "adapter").exists()
    assert (tmp_path / "two" / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()
    done = run(argv, "fsdp", tmp_path)
    assert "checkpoint-2" in done.stdout  # the summary's resumed_from
    assert_same_adapter(tmp_path / "one", tmp_path / "two", atol=1e-5)


def test_fsdp_version_1_is_refused_before_training():
    """FSDP1's flat shards are not DTensors: saving them would write a partial adapter, so it is refused.
    (accelerate cannot build an FSDP1 plugin without a GPU, so the trainer check runs on a stand-in.)"""
    from types import SimpleNamespace

    from vaccine.errors import ConfigError
    from vaccine.metered import MeteredTrainer

    plugin = SimpleNamespace(fsdp_version=1)
    trainer = SimpleNamespace(
        is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
    )
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        MeteredTrainer._check_fsdp_setup(trainer)


def test_the_cli_leaves_the_process_group_when_a_command_ends(tmp_path):
    """A gloo group left to interpreter shutdown can abort a finished rank: the CLI destroys it."""
    import torch.distributed as dist

    from vaccine.cli import main

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert main(["run", str(tmp_path / "missing.yaml")]) == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
