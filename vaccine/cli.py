"""Command-line interface: argument parsing only; each sub-command builds a validated spec, calls a stage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, VaccineError

PAPER = "Huang et al., Vaccine, NeurIPS 2024"


def _print_summary(summary: dict[str, Any]) -> None:
    """Print a stage's summary as JSON, once: under a launcher (torchrun, accelerate) only rank 0 prints, so
    the output stays one JSON object that tools like ``jq`` can read."""
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))


def _add_common_flags(p: argparse.ArgumentParser, *, lr: float, epochs: float) -> None:
    """Model, data formatting, LoRA and optimizer flags shared by `align` and `finetune`."""
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="HF id, local path or the embedded default"
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (re-running resumes)")
    p.add_argument("--epochs", type=float, default=epochs)
    p.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    p.add_argument("--lr", type=float, default=lr)
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


def _training_args(args: argparse.Namespace) -> dict[str, Any]:
    from .stage_io import training_arguments

    return training_arguments(
        args.out,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        weight_decay=args.weight_decay,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        seed=args.seed,
        dtype=args.dtype,
    )


def _lora(args: argparse.Namespace):
    from .lora import LoraSettings

    targets = args.lora_targets.split(",") if args.lora_targets else None
    return LoraSettings(
        r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, target_modules=targets
    )


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="align a model (SFT, Vaccine, RepNoise) with LoRA",
        description=f"Alignment stage ({PAPER}). Writes adapter/, config.json, log.jsonl, "
        "summary.json and checkpoints/ into --out; re-running resumes from the last checkpoint.",
    )
    p.add_argument("--method", required=True, help="alignment method: sft, vaccine, repnoise")
    p.add_argument("--data", default="alignment", help="built-in split, local .json/.jsonl/.csv, or hf:ID")
    p.add_argument("--num-samples", type=int, default=None, help="seeded random subset of the data")
    p.add_argument(
        "--helpful-data",
        default=None,
        help="benign prompts mixed into the alignment data (e.g. 'benign'); the model answers them itself",
    )
    p.add_argument("--helpful-share", type=float, default=0.0, help="share of --num-samples that is helpful")
    p.add_argument("--self-distill-tokens", type=int, default=96, help="length of the self-distilled answers")
    p.add_argument(
        "--self-distill-cache",
        type=Path,
        default=None,
        help="JSONL of self-distilled answers by prompt, shareable between alignments of one base model "
        "(default: OUT/self_distilled.jsonl)",
    )
    p.add_argument("--rho", type=float, default=None, help="vaccine: perturbation budget (default 2.0)")
    p.add_argument("--tau", type=int, default=None, help="vaccine: perturb every tau-th step (default 1)")
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE", help="a method knob (repeatable)")
    _add_common_flags(p, lr=1e-3, epochs=1.0)
    p.set_defaults(func=_run_align)


def _align_spec(args: argparse.Namespace):
    from .align import AlignSpec
    from .defenses.registry import parse_knobs

    knobs: dict[str, Any] = parse_knobs(args.method_arg, "--method-arg")
    knobs.update({k: v for k, v in (("rho", args.rho), ("tau", args.tau)) if v is not None})
    return AlignSpec(
        method=args.method,
        out=args.out,
        training_args=_training_args(args),
        method_args=knobs,
        model=args.model,
        data=args.data,
        num_samples=args.num_samples,
        helpful_data=args.helpful_data,
        helpful_share=args.helpful_share,
        self_distill_tokens=args.self_distill_tokens,
        self_distill_cache=args.self_distill_cache,
        template=args.template,
        max_length=args.max_length,
        dtype=args.dtype,
        lora=_lora(args),
        trust_remote_code=args.trust_remote_code,
    )


def _run_align(args: argparse.Namespace) -> int:
    from .align import run_alignment

    _print_summary(run_alignment(_align_spec(args)))
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="the attack: fine-tune on a benign task mixed with harmful data",
        description="Fine-tuning-as-a-service: n samples of --task of which floor(p*n) are "
        "harmful. Without --aligned the base model is attacked (Non-aligned).",
    )
    p.add_argument("--aligned", type=Path, default=None, help="alignment run folder or adapter folder")
    p.add_argument("--task", default="sst2", help="benign task: sst2, gsm8k, agnews, instruct")
    p.add_argument(
        "--task-source", default=None, help="local file or hub id for the task (default: embedded)"
    )
    # long forms: launchers (torchrun, accelerate launch) read "--p"/"--n" as abbreviations of their own flags
    p.add_argument("--p", "--harmful-ratio", dest="p", type=float, default=0.1, help="harmful ratio, [0, 1]")
    p.add_argument("--n", "--num-train", dest="n", type=int, default=1000, help="fine-tuning samples")
    p.add_argument("--harmful", default="harmful", help="harmful data: built-in split, file or hf:ID")
    p.add_argument("--alignment-data", default="alignment", help="safety data used by ewc, vlguard, lisa")
    p.add_argument("--lora-mode", default="double", choices=["double", "single"])
    p.add_argument("--defense", default="none", help="fine-tune-stage defense: none, ewc, kl, vlguard, lisa")
    p.add_argument("--defense-arg", action="append", metavar="KEY=VALUE", help="a defense knob (repeatable)")
    p.add_argument(
        "--drift-every",
        type=int,
        default=0,
        help="every K steps log alignment loss and embedding drift to drift.jsonl (0: off)",
    )
    p.add_argument("--drift-samples", type=int, default=16, help="alignment samples used for drift")
    _add_common_flags(p, lr=1e-5, epochs=20.0)
    p.set_defaults(func=_run_finetune)


def _finetune_spec(args: argparse.Namespace):
    from transformers import TrainingArguments

    from .defenses.registry import parse_knobs
    from .finetune import FinetuneSpec

    return FinetuneSpec(
        out=args.out,
        training=TrainingArguments(**_training_args(args)),
        model=args.model,
        aligned=args.aligned,
        task=args.task,
        task_source=args.task_source,
        p=args.p,
        n=args.n,
        harmful=args.harmful,
        alignment_data=args.alignment_data,
        lora_mode=args.lora_mode,
        defense=args.defense,
        defense_args=parse_knobs(args.defense_arg, "--defense-arg"),
        template=args.template,
        max_length=args.max_length,
        dtype=args.dtype,
        lora=_lora(args),
        drift_every=args.drift_every,
        drift_samples=args.drift_samples,
        trust_remote_code=args.trust_remote_code,
    )


def _run_finetune(args: argparse.Namespace) -> int:
    from .finetune import run_finetune

    _print_summary(run_finetune(_finetune_spec(args)))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Harmful Score, Fine-tune Accuracy and drift of a model",
        description="Batched greedy generation on held-out harmful prompts (HS, judged) and on "
        "the task's test split (FA). Writes one JSON with metrics, config, records, timings.",
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument(
        "--adapter",
        action="append",
        type=Path,
        default=[],
        help="adapter or run folder, merged in order (Double-LoRA: the alignment one, then the "
        "fine-tuning one); repeatable",
    )
    p.add_argument(
        "--harmful-prompts",
        default="advbench",
        help="advbench, harmbench, or a prompt file (.txt one per line, .jsonl, .json, .csv)",
    )
    p.add_argument(
        "--num-harmful", type=int, default=None, help="a seeded sample of the prompts (default: all of them)"
    )
    p.add_argument("--task", default="sst2", help="sst2, gsm8k, agnews, instruct, or 'none'")
    p.add_argument("--task-source", default=None)
    p.add_argument("--num-task", type=int, default=200)
    p.add_argument("--strict", action="store_true", help="strict exact-label scoring instead of the paper's")
    p.add_argument(
        "--judge",
        default="default",
        help="default (offline refusal + MiniLM), refusal, hf-classifier:ID, guard:ID",
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="for harmful prompts")
    p.add_argument("--task-max-new-tokens", type=int, default=None, help="default: per task (sst2: 8)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--generation-engine",
        default="prefix",
        choices=["prefix", "hf"],
        help="prefix: shared prompt prefix computed once, finished answers dropped (same answers, faster); "
        "hf: transformers' generate",
    )
    p.add_argument("--template", default="chat", choices=["chat", "alpaca"])
    p.add_argument(
        "--reference-adapter",
        action="append",
        type=Path,
        default=None,
        help="adapters of the aligned model: adds embedding drift and alignment loss",
    )
    p.add_argument("--num-drift", type=int, default=32)
    p.add_argument(
        "--benign-prompts",
        default="benign-eval",
        help="held-out benign prompts for the over-refusal rate (a split or a file), or 'none'",
    )
    p.add_argument("--num-benign", type=int, default=100)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--out", required=True, type=Path, help="result JSON file")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .eval.generate import GenerationSettings
    from .evaluate import EvaluateSpec, run_evaluate

    spec = EvaluateSpec(
        out=args.out,
        model=args.model,
        adapters=args.adapter,
        harmful_prompts=args.harmful_prompts,
        num_harmful=args.num_harmful,
        task=None if args.task == "none" else args.task,
        task_source=args.task_source,
        num_task=args.num_task,
        strict=args.strict,
        judge=args.judge,
        generation=GenerationSettings(
            args.max_new_tokens, args.batch_size, args.template, args.generation_engine
        ),
        task_max_new_tokens=args.task_max_new_tokens,
        reference_adapters=args.reference_adapter,
        num_drift=args.num_drift,
        benign_prompts=None if args.benign_prompts == "none" else args.benign_prompts,
        num_benign=args.num_benign,
        seed=args.seed,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    result = run_evaluate(spec)
    print(
        json.dumps(
            {"metrics": result["metrics"], "timings": result["timings"], "out": str(args.out)}, indent=2
        )
    )
    return 0


def _add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="the offline judge: train/cache it, validate it, or score a file",
        description="The default judge: a three-way verdict (refusal / compliance / other) per answer, "
        "reading prompt and answer together. Without an action: train or load it and print its metadata.",
    )
    p.add_argument("--retrain", action="store_true", help="train again even if a cached judge exists")
    p.add_argument("--validate", action="store_true", help="same as the 'validate' action with no --labels")
    actions = p.add_subparsers(dest="action")
    score = actions.add_parser("score", help="judge every (prompt, answer) of a JSONL file")
    score.add_argument("file", type=Path, help="JSONL, one object per line with a prompt and an answer")
    score.add_argument("--out", type=Path, default=None, help="JSONL with verdicts (default: stdout)")
    validate = actions.add_parser("validate", help="precision/recall/F1/accuracy and the kinds' confusion")
    validate.add_argument(
        "--labels", type=Path, default=None, help="labelled JSONL (default: the judge's own test splits)"
    )
    validate.add_argument(
        "--label-field",
        default="kind",
        help="field with refusal/compliance/other, or a binary label (1/0, true/false, harmful/safe)",
    )
    for action in (score, validate):
        action.add_argument("--judge", default="default", help="default, refusal, hf-classifier:ID, guard:ID")
        action.add_argument("--prompt-field", default="prompt")
        action.add_argument("--answer-field", default="answer")
    p.set_defaults(func=_run_judge)


def _run_judge(args: argparse.Namespace) -> int:
    from .judges import check_judge_spec, get_judge
    from .judges.labels import read_labels, read_pairs
    from .judges.metrics import validate_judge

    action = args.action or ("validate" if args.validate else None)
    spec = getattr(args, "judge", "default")
    check_judge_spec(spec)
    if action == "score":
        pairs = read_pairs(args.file, args.prompt_field, args.answer_field)  # bad input fails before loading
    if action == "validate" and getattr(args, "labels", None) is not None:
        labels = read_labels(args.labels, args.label_field, args.prompt_field, args.answer_field)
    judge = get_judge(spec, **({"retrain": True} if args.retrain and spec == "default" else {}))
    if action is None:
        print(json.dumps(judge.meta, indent=2, default=str))
    elif action == "validate":
        if getattr(args, "labels", None) is None:
            metrics = judge.validate() if hasattr(judge, "meta") else None
            if metrics is None:
                raise ConfigError(f"judge '{spec}' has no labelled splits of its own; pass --labels FILE")
        else:
            metrics = validate_judge(judge, labels)
        print(json.dumps(metrics, indent=2))
    else:
        _score_file(judge, pairs, args.out)
    return 0


def _score_file(judge: Any, pairs: list[tuple[str, str]], out: Path | None) -> None:
    from collections import Counter

    from .io import write_text_atomic

    verdicts = judge.verdicts([p for p, _ in pairs], [a for _, a in pairs])
    rows = [
        {
            "prompt": p,
            "answer": a,
            "kind": v.kind,
            "score": round(v.score, 4),
            "flagged": v.kind == "compliance",
        }
        for (p, a), v in zip(pairs, verdicts, strict=True)
    ]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if out is None:
        sys.stdout.write(text)
        return
    write_text_atomic(out, text)
    print(json.dumps({"out": str(out), "n": len(rows), "kinds": dict(Counter(r["kind"] for r in rows))}))


def _add_tsne(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tsne",
        help="t-SNE picture of alignment-data embeddings across models",
        description="One joint t-SNE of the alignment sample's embeddings under each model view.",
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument(
        "--view",
        nargs=2,
        action="append",
        required=True,
        metavar=("LABEL", "ADAPTERS"),
        help="a label and comma-separated adapters merged in order ('-' for the base model)",
    )
    p.add_argument("--data", default="alignment")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--layer", type=int, default=-1, help="hidden-state layer to embed (default: last)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, type=Path, help="PNG file")
    p.set_defaults(func=_run_tsne)


def _run_tsne(args: argparse.Namespace) -> int:
    from .data.context import DataContext
    from .data.resolve import load_records
    from .eval.tsne import sentence_embeddings, tsne_figure
    from .evaluate import sample
    from .stage_io import load_merged_model

    records = sample(load_records(args.data), args.num_samples, args.seed, args.data)
    embeddings = {}
    for label, adapters in args.view:
        paths = [] if adapters == "-" else [Path(a) for a in adapters.split(",") if a]
        model, tokenizer = load_merged_model(args.model, paths)
        batches = DataContext(tokenizer).loader(records, 16, args.seed)
        embeddings[label] = sentence_embeddings(model, batches, args.layer)
    print(tsne_figure(embeddings, args.out, f"{args.data} embeddings ({len(records)} samples)", args.seed))
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an experiment grid (align -> finetune -> evaluate -> store)",
        description="Validates the whole grid first, then runs the stages that are not cached yet.",
    )
    p.add_argument("config", type=Path, help="grid YAML (see configs/)")
    p.add_argument("--report", action="store_true", help="build the report when the grid is done")
    p.set_defaults(func=_run_grid)


def _run_grid(args: argparse.Namespace) -> int:
    from .experiments.grid import load_grid
    from .experiments.run import run_grid

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would evaluate and write the store
        raise ConfigError(
            "`vaccine run` drives a grid from one process; under a launcher, launch its stages instead "
            "(`accelerate launch -m vaccine align|finetune ...`), see the README's 'Many GPUs'"
        )
    grid = load_grid(args.config)
    print(json.dumps(run_grid(grid), indent=2))
    if args.report:
        return _report(grid.out / "results.sqlite", grid.out / "report", tuple(grid.report["references"]))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown + HTML report (paper's Table 1, plots) from a result store")
    p.add_argument("source", type=Path, help="a grid YAML or a results.sqlite file")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: the grid's out/report)")
    p.set_defaults(func=_run_report)


def _report(store: Path, out: Path, references: tuple[str, ...] | None = None) -> int:
    from .experiments.report import build_report
    from .experiments.store import ResultStore

    if not store.is_file():
        raise ConfigError(f"{store}: no result store (run the grid first: vaccine run CONFIG.yaml)")
    paths = build_report(ResultStore(store), out, **({"references": references} if references else {}))
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {paths['markdown']}  {paths['html']}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    if args.source.suffix in (".yaml", ".yml"):
        from .experiments.grid import load_grid

        grid = load_grid(args.source)
        references = tuple(grid.report["references"])
        return _report(grid.out / "results.sqlite", args.out or grid.out / "report", references)
    return _report(args.source, args.out or args.source.parent / "report")


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
    _add_finetune(sub)
    _add_evaluate(sub)
    _add_judge(sub)
    _add_tsne(sub)
    _add_run(sub)
    _add_report(sub)
    _add_info(sub)
    return parser


def _leave_process_group() -> None:
    """Under a launcher, leave the process group before the interpreter exits: a gloo group left to
    interpreter shutdown can abort a rank after its work is done ("terminate called without an active
    exception", pytorch/pytorch#190489), which the launcher reports as a failed run."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group to leave
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except VaccineError as err:
        print(f"vaccine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaccine {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
