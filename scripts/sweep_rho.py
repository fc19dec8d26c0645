r"""Choose Vaccine's rho by measurement, on tuning prompts only: align with Vaccine at several rho (the
chosen alignment data and length), check each aligned model before the attack, then attack it with the
calibrated fine-tune at one p and compare HS with SFT's under the same attack.

rho is one L2 norm over every perturbed hidden state, so its scale depends on the model's width and depth
(the paper's 2 is for Llama-2-7B; small-model reports used 0.02-0.1): the sweep spans values below and
above 2. Cached by folder: resumable.

    python scripts/sweep_rho.py --rhos 0.1,0.5,2,8 --sft runs/sweep-alignment2/sft-share0.6-n400

``--knob KEY=VALUE`` (repeatable) sets another of Vaccine's knobs for every rho, which turns the sweep into a
test of one hypothesis at a time (issue 14, item 5), e.g. ``--knob perturbation_norm=sample`` or
``--knob 'perturb_modules=.*layers\.(1[5-9]|2[0-9])\.self_attn'`` (the upper half of SmolLM2's 30 layers).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sweeps import align, attack, evaluate, progress, report

from vaccine.settings import knob_pair

METRICS = ("harmful_score", "other_share", "benign_refusal_rate", "finetune_accuracy")


def variant_name(rho: float, knobs: dict[str, Any]) -> str:
    """A folder-safe name for one Vaccine setting: its rho and its other knobs, in the order given."""
    parts = [f"rho{rho:g}", *(f"{name}-{value}" for name, value in knobs.items())]
    return "vaccine-" + "-".join("".join(c if c.isalnum() or c in ".-_" else "_" for c in p) for p in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rhos", default="0.1,0.5,2,8")
    parser.add_argument("--sft", type=Path, required=True, help="the SFT alignment folder to compare with")
    parser.add_argument("--data", default="alignment-harm", help="the safety pairs")
    parser.add_argument("--share", type=float, default=0.6)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--align-lr", type=float, default=1e-3)
    parser.add_argument("--align-epochs", type=float, default=1)
    parser.add_argument("--lora-r", type=int, default=8, help="the alignment's LoRA rank (as the SFT one's)")
    parser.add_argument(
        "--full-finetune", action="store_true", help="train every weight, not a LoRA adapter (as the SFT one)"
    )
    parser.add_argument("--attack-lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--num-task", type=int, default=200)
    parser.add_argument("--num-benign", type=int, default=100)
    parser.add_argument(
        "--knob", type=knob_pair, action="append", default=[], help="another knob: KEY=VALUE (typed as it)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/sweep-rho"))
    args = parser.parse_args()
    knobs = dict(args.knob)
    sizes = {"num_task": args.num_task, "num_benign": args.num_benign}
    strength = {"lr": args.attack_lr, "p": args.p, "n": args.n, "epochs": args.epochs}
    rows = {}

    def measure(name: str, folder: Path) -> None:
        """The aligned model before the attack, then attacked: one rho's rows, as soon as they exist."""
        before, after = f"{name}, before the attack", f"{name}, attacked at p {args.p:g}"
        rows[before] = evaluate(folder / "eval.json", [folder], **sizes)
        progress(before, rows[before], METRICS)
        attacked = attack(args.out / f"attack-{folder.name}", folder, **strength)
        rows[after] = evaluate(attacked / "eval.json", [folder, attacked], **sizes)
        progress(after, rows[after], METRICS)
        report(args.out, rows, METRICS)

    measure("SFT", args.sft)
    for rho in (float(r) for r in args.rhos.split(",")):
        folder = args.out / (variant_name(rho, knobs) + ("-full" if args.full_finetune else ""))
        align(
            folder,
            method="vaccine",
            data=args.data,
            share=args.share,
            num_samples=args.samples,
            lr=args.align_lr,
            epochs=args.align_epochs,
            lora_r=args.lora_r,
            full_finetune=args.full_finetune,
            rho=rho,
            **knobs,
        )
        settings = "".join(f", {name} {value}" for name, value in knobs.items())
        settings += ", every weight trained" if args.full_finetune else ""
        measure(f"Vaccine rho {rho:g}{settings}", folder)


if __name__ == "__main__":
    main()
