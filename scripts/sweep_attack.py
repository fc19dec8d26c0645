"""Calibrate the attack like the paper's: fine-tune an aligned model at several learning rates (and p), then
evaluate on tuning prompts only (`harmful-validation`, never the reported AdvBench prompts).

The wanted setting: HS at p = 0 stays within 10 points of the aligned model (a benign fine-tune alone does
not remove safety), HS grows with p, and SST-2 accuracy reaches >= 80 %. Cached by folder: resumable.

    python scripts/sweep_attack.py --aligned runs/sweep-alignment/sft-share0.75 --lrs 1e-4,1e-3 --ps 0,0.2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import TrainingArguments

from vaccine.eval.generate import GenerationSettings
from vaccine.evaluate import EvaluateSpec, run_evaluate
from vaccine.finetune import FinetuneSpec, run_finetune
from vaccine.io import write_text_atomic
from vaccine.stage_io import training_arguments

METRICS = ("harmful_score", "other_share", "benign_refusal_rate", "finetune_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aligned", type=Path, required=True)
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    parser.add_argument("--ps", default="0,0.2")
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep-attack"))
    args = parser.parse_args()
    lines = ["| lr | p | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for lr in args.lrs.split(","):
        for p in (float(x) for x in args.ps.split(",")):
            folder = args.out / f"lr{lr}-p{p:g}"
            if not (folder / "summary.json").is_file():
                training = training_arguments(folder, epochs=args.epochs, max_steps=-1, lr=float(lr),
                                              batch_size=5, save_steps=20)  # fmt: skip
                run_finetune(
                    FinetuneSpec(
                        out=folder,
                        training=TrainingArguments(**training),
                        aligned=args.aligned,
                        p=p,
                        n=args.n,
                        max_length=160,
                    )  # fmt: skip
                )
            result = folder / "eval.json"
            if not result.is_file():
                run_evaluate(
                    EvaluateSpec(
                        out=result,
                        adapters=[args.aligned, folder],
                        harmful_prompts="harmful-validation",
                        num_task=200,
                        num_benign=200,
                        generation=GenerationSettings(args.max_new_tokens, 64),
                    )  # fmt: skip
                )
            metrics = json.loads(result.read_text())["metrics"]
            cells = [f"{metrics[m]:.1f} [{metrics[m + '_ci'][0]:.1f}, {metrics[m + '_ci'][1]:.1f}]"
                     for m in METRICS]  # fmt: skip
            lines.append(f"| {lr} | {p:g} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    write_text_atomic(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
