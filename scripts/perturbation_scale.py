"""How large is Vaccine's perturbation next to what it perturbs? (issue 14, item 5: the first hypothesis for a
null result.) rho is one L2 norm over every perturbed attention output of a batch; this measures that same
norm of the attention outputs themselves on alignment batches, so rho / ||h|| says what share of the hidden
states the worst-case perturbation may move.

    python scripts/perturbation_scale.py --adapter runs/.../sft-... --rhos 0.1,1,2,4,16
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from vaccine.data.context import DataContext
from vaccine.data.records import sample_of
from vaccine.data.resolve import load_records
from vaccine.methods.vaccine.perturb import capture_outputs, find_attention_modules, squared_norm
from vaccine.run_folders import load_merged_model


@torch.no_grad()
def batch_norms(model, batches) -> list[float]:
    """||(h_1..h_L)||_2 of each batch: every attention output, every non-padding token (rho's scope)."""
    modules = [module for _, module in find_attention_modules(model)]
    norms = []
    for batch in batches:
        with capture_outputs(modules) as outputs:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        keep = batch["attention_mask"].unsqueeze(-1).float()
        norms.append(float(squared_norm([h.float() * keep for h in outputs]).sqrt()))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", type=Path, action="append", default=[], help="merged in order")
    parser.add_argument("--data", default="alignment-harm")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--rhos", default="0.1,1,2,4,16")
    args = parser.parse_args()
    model, tokenizer = load_merged_model(args.model, args.adapter)
    records = sample_of(load_records(args.data), args.batches * args.batch_size, 0, "batches", args.data)
    loader = DataContext(tokenizer, "chat", args.max_length).loader(records, args.batch_size, 0)
    norms = batch_norms(model, loader)
    median = statistics.median(norms)
    layers = len(find_attention_modules(model))
    print(
        f"{layers} attention outputs; ||h|| per batch of {args.batch_size}: median {median:.1f}, "
        f"range {min(norms):.1f}-{max(norms):.1f}"
    )
    print("| rho | rho / ||h|| |")
    print("|---:|---:|")
    for rho in (float(r) for r in args.rhos.split(",")):
        print(f"| {rho:g} | {rho / median:.2%} |")


if __name__ == "__main__":
    main()
