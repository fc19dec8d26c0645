"""`python -m benchmarks` (or `make bench`): every contender measured in one run, one process.

Writes the raw numbers as JSON and a Markdown page (``docs/benchmarks.md`` by default) with the machine,
the command, the tables and each target next to the measured ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks.demo_stages import stage_breakdown
from benchmarks.generation import throughput
from benchmarks.markdown import render
from benchmarks.step_time import CONTENDERS, Settings, measure
from vaccine.data.resolve import load_records
from vaccine.io import write_json_atomic
from vaccine.models import EMBEDDED_DEFAULT, load_model_and_tokenizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--models", default="embedded,tiny", help="comma list of: embedded (--model), tiny")
    parser.add_argument(
        "--model", default=EMBEDDED_DEFAULT, help="the 'embedded' rows' model: an HF id or local path"
    )
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps discarded first")
    parser.add_argument("--batch-size", type=int, default=5, help="the demo's (and the paper's) batch")
    parser.add_argument("--max-length", type=int, default=160, help="the demo's")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    parser.add_argument("--hs-prompts", type=int, default=256, help="0 skips the generation benchmark")
    parser.add_argument("--hs-new-tokens", type=int, default=32)
    parser.add_argument("--hs-batch-size", type=int, default=128, help="the evaluation default")
    parser.add_argument("--demo-run", type=Path, default=Path("runs/demo"), help="a `vaccine run` folder")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--only-generation",
        action="store_true",
        help="measure HS generation only and replace that section of an existing --out (with its own date)",
    )
    return parser.parse_args(argv)


def tiny_model(vocab_size: int) -> torch.nn.Module:
    """A 4-layer, 128-wide random Llama with the embedded tokenizer's vocabulary (the head dominates)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return AutoModelForCausalLM.from_config(config)


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "platform": platform.platform(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "model": args.model,
        "torch": torch.__version__,
        "settings": {k: str(v) for k, v in vars(args).items()},
    }


def step_benchmarks(args: argparse.Namespace, base: Any, tokenizer: Any, name: str) -> list[dict[str, Any]]:
    settings = Settings(args.batch_size, args.max_length, args.warmup, args.steps, args.bf16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = base.to(device)
    # a seeded sample of the whole split: its head is PyRIT's long many-shot prompts, not typical lengths
    pool = load_records("alignment")
    records = random.Random(0).sample(pool, settings.batch_size * (settings.warmup + settings.steps))
    rows = []
    for contender in CONTENDERS:
        print(f"[{name}] {contender.name} ...", flush=True)
        row = measure(contender, base, tokenizer, records, settings)
        print(f"[{name}] {contender.name}: median step {row['median_step_s']:.3f} s", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only_generation:
        return generation_only(args)
    result: dict[str, Any] = {"machine": machine(args), "step_time": {}}
    embedded, tokenizer = load_model_and_tokenizer(args.model, dtype="float32")
    for name in args.models.split(","):
        base = embedded if name == "embedded" else tiny_model(len(tokenizer))
        result["step_time"][name] = step_benchmarks(args, base, tokenizer, name)
    if args.hs_prompts > 0:
        print("generation throughput ...", flush=True)
        result["generation"] = throughput(
            embedded, tokenizer, args.hs_prompts, args.hs_new_tokens, args.hs_batch_size
        )
    result["demo"] = stage_breakdown(args.demo_run)
    json_path = args.out.with_suffix(".json")
    write_json_atomic(json_path, result)
    args.out.write_text(render(result), encoding="utf-8")
    print(f"wrote {args.out} and {json_path}")
    return 0


def generation_only(args: argparse.Namespace) -> int:
    """Re-measure the generation section alone; the rest of the page keeps its own, older measurement,
    and the section says when and how it was measured."""
    json_path = args.out.with_suffix(".json")
    result = json.loads(json_path.read_text(encoding="utf-8"))
    embedded, tokenizer = load_model_and_tokenizer(args.model, dtype="float32")
    result["generation"] = throughput(
        embedded, tokenizer, args.hs_prompts, args.hs_new_tokens, args.hs_batch_size
    )
    result["generation"]["measured"] = machine(args)
    write_json_atomic(json_path, result)
    args.out.write_text(render(result), encoding="utf-8")
    print(f"wrote the generation section of {args.out} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
