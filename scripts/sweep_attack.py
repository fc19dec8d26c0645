"""Calibrate the attack like the paper's: fine-tune an aligned model at several learning rates and epochs
(and p), then evaluate on tuning prompts only (`harmful-validation`, never the reported AdvBench prompts).

The wanted setting: HS at p = 0 stays within 10 points of the aligned model (a benign fine-tune alone does
not remove safety), HS grows with p, and SST-2 accuracy reaches >= 80 %. Cached by folder: resumable.

    python scripts/sweep_attack.py --aligned runs/sweep-alignment/sft-share0.6-n400 --lrs 1e-4,1e-3 --ps 0,0.2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps import attack, evaluate, progress, report

from vaccine.settings import ModelSettings, add_flags, cli_fields

METRICS = ("harmful_score", "other_share", "benign_refusal_rate", "finetune_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aligned", type=Path, required=True)
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    parser.add_argument("--epochs", default="2", help="comma-separated")
    parser.add_argument("--ps", default="0,0.2")
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--num-task", type=int, default=200)
    parser.add_argument("--num-benign", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep-attack"))
    add_flags(parser, ModelSettings)  # the aligned run's model and prompt format, as vaccine's own flags
    args = parser.parse_args()
    model = {f.name: getattr(args, f.name) for f in cli_fields(ModelSettings)}
    sizes = {"num_task": args.num_task, "num_benign": args.num_benign, **model}
    rows = {}
    for epochs in (float(e) for e in args.epochs.split(",")):
        for lr in args.lrs.split(","):
            for p in (float(x) for x in args.ps.split(",")):
                folder = args.out / f"lr{lr}-e{epochs:g}-p{p:g}"
                attack(folder, args.aligned, lr=float(lr), p=p, n=args.n, epochs=epochs, **model)
                name = f"lr {lr}, {epochs:g} epochs, p {p:g}"
                rows[name] = evaluate(folder / "eval.json", [args.aligned, folder], **sizes)
                progress(name, rows[name], METRICS)
    report(args.out, rows, METRICS)


if __name__ == "__main__":
    main()
