"""Command-line interface: argument parsing only; each sub-command builds a validated spec, calls a stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import VaccineError

PAPER = "Huang et al., Vaccine, NeurIPS 2024"


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="align a model with SFT or Vaccine (LoRA)",
        description=f"Alignment stage ({PAPER}). Writes adapter/, config.json, log.jsonl, "
        "summary.json and checkpoints/ into --out; re-running resumes from the last checkpoint.",
    )
    p.add_argument("--method", required=True, choices=["sft", "vaccine"])
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="HF id, local path or the embedded default"
    )
    p.add_argument("--data", default="alignment", help="built-in split, local .json/.jsonl/.csv, or hf:ID")
    p.add_argument("--num-samples", type=int, default=None, help="seeded random subset of the data")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rho", type=float, default=None, help="perturbation budget (vaccine; default 2.0)")
    p.add_argument("--tau", type=int, default=1, help="perturb every tau-th step (Accelerated Vaccine)")
    p.add_argument(
        "--perturb-modules", default=None, help="regex over module names (default: every self-attention)"
    )
    p.add_argument("--perturbation-norm", default="batch", choices=["batch", "sample"])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--template", default="chat", choices=["chat", "alpaca"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=4)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument(
        "--lora-targets", default=None, help="comma-separated module names (default: q,k,v,o,gate,up,down)"
    )
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (resume point)")
    p.add_argument("--logging-steps", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--trust-remote-code", action="store_true", help="run code shipped with the model (off by default)"
    )
    p.set_defaults(func=_run_align)


def _align_spec(args: argparse.Namespace):
    import torch

    from .align import AlignSpec
    from .lora import LoraSettings
    from .trainer_config import VaccineConfig

    rho = args.rho if args.rho is not None else (2.0 if args.method == "vaccine" else 0.0)
    training = VaccineConfig(
        output_dir=str(args.out / "checkpoints"),
        rho=rho,
        tau=args.tau,
        perturb_modules=args.perturb_modules,
        perturbation_norm=args.perturbation_norm,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        weight_decay=args.weight_decay,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        logging_steps=args.logging_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        bf16=args.dtype == "bfloat16",
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    targets = args.lora_targets.split(",") if args.lora_targets else None
    lora = LoraSettings(
        r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, target_modules=targets
    )
    return AlignSpec(
        method=args.method,
        out=args.out,
        training=training,
        model=args.model,
        data=args.data,
        num_samples=args.num_samples,
        template=args.template,
        max_length=args.max_length,
        dtype=args.dtype,
        lora=lora,
        trust_remote_code=args.trust_remote_code,
    )


def _run_align(args: argparse.Namespace) -> int:
    import json

    from .align import run_alignment

    summary = run_alignment(_align_spec(args))
    print(json.dumps(summary, indent=2))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, cache paths and installed assets")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .info import collect_info, format_info

    print(format_info(collect_info()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaccine", description=f"Vaccine ({PAPER}): align, attack, evaluate."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_align(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaccineError as err:
        print(f"vaccine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaccine {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
