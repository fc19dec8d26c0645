"""Command-line interface: argument parsing only; each sub-command builds a validated spec, calls a stage."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, SettingError, VaccineError
from .settings import add_flags, flag_name, from_flags, setting

PAPER = "Huang et al., Vaccine, NeurIPS 2024"


def _print_summary(summary: dict[str, Any]) -> None:
    """Print a stage's summary as JSON, once: under a launcher (torchrun, accelerate) only rank 0 prints, so
    the output stays one JSON object that tools like ``jq`` can read."""
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))


def _add_stage(
    sub: argparse._SubParsersAction,
    name: str,
    spec_path: str,
    run: Callable[[Any], int],
    command: str | None,
    **texts: str,
) -> None:
    """A sub-command whose flags are the fields of the spec at ``spec_path`` ("module:Class"; defaults and
    help from the dataclass). The spec's module (torch, transformers) is imported only when ``command`` is
    this one, or None (every command), so ``vaccine --help`` and the light commands start fast."""
    p = sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **texts)
    if command in (None, name):
        module, _, cls = spec_path.partition(":")
        spec = getattr(importlib.import_module(module), cls)
        add_flags(p, spec)
        p.set_defaults(func=lambda args: run(from_flags(spec, args)), spec=spec)


def _run_align(spec: Any) -> int:
    from .align import run_alignment

    _print_summary(run_alignment(spec))
    return 0


def _run_finetune(spec: Any) -> int:
    from .finetune import run_finetune

    _print_summary(run_finetune(spec))
    return 0


def _run_posthoc(spec: Any) -> int:
    from .posthoc import run_posthoc

    _print_summary(run_posthoc(spec))
    return 0


def _run_evaluate(spec: Any) -> int:
    from .evaluate import run_evaluate

    result = run_evaluate(spec)
    print(
        json.dumps(
            {"metrics": result["metrics"], "timings": result["timings"], "out": str(spec.out)}, indent=2
        )
    )
    return 0


def _add_stages(sub: argparse._SubParsersAction, command: str | None) -> None:
    _add_stage(
        sub,
        "align",
        "vaccine.align:AlignSpec",
        _run_align,
        command,
        help="align a model (SFT, Vaccine, RepNoise) with LoRA",
        description=f"Alignment stage ({PAPER}). Writes adapter/, config.json, log.jsonl, "
        "summary.json and checkpoints/ into --out; re-running resumes from the last checkpoint.",
    )
    _add_stage(
        sub,
        "finetune",
        "vaccine.finetune:FinetuneSpec",
        _run_finetune,
        command,
        help="the attack: fine-tune on a benign task mixed with harmful data",
        description="Fine-tuning-as-a-service: n samples of --task of which floor(p*n) are "
        "harmful. Without --aligned the base model is attacked (Non-aligned).",
    )
    _add_stage(
        sub,
        "posthoc",
        "vaccine.posthoc:PosthocSpec",
        _run_posthoc,
        command,
        help="repair a fine-tuned model after the attack (safety fine-tune, Antidote)",
        description="Post-hoc stage: --attacked lists the fine-tuned model's adapters in merge order. "
        "Writes adapter/, config.json and summary.json (its 'adapters': the repaired model, to pass to "
        "'vaccine evaluate --adapter' in order).",
    )
    _add_stage(
        sub,
        "evaluate",
        "vaccine.evaluate:EvaluateSpec",
        _run_evaluate,
        command,
        help="Harmful Score, Fine-tune Accuracy and drift of a model",
        description="Batched greedy generation on held-out harmful prompts (HS, judged) and on "
        "the task's test split (FA). Writes one JSON with metrics, config, records, timings.",
    )
    _add_stage(
        sub,
        "tsne",
        "vaccine.eval.tsne:TsneSpec",
        _run_tsne,
        command,
        help="t-SNE picture of alignment-data embeddings across models",
        description="One joint t-SNE of the alignment sample's embeddings under each model view.",
    )


@dataclass(kw_only=True)
class JudgeCommand:
    retrain: bool = setting(False, "train again even if a cached judge exists")
    validate: bool = setting(False, "same as the 'validate' action with no --labels")


@dataclass(kw_only=True)
class JudgedPairs:
    judge: str = setting("default", "default, refusal, hf-classifier:ID, guard:ID")
    prompt_field: str = setting("prompt", "the field holding the prompt")
    answer_field: str = setting("answer", "the field holding the answer")


@dataclass(kw_only=True)
class ScoreCommand(JudgedPairs):
    file: Path = setting(help="JSONL, one object per line with a prompt and an answer", positional=True)
    out: Path | None = setting(None, "JSONL with verdicts (default: stdout)")


@dataclass(kw_only=True)
class ValidateCommand(JudgedPairs):
    labels: Path | None = setting(None, "labelled JSONL (default: the judge's own test splits)")
    label_field: str = setting(
        "kind", "field with refusal/compliance/other, or a binary label (1/0, true/false, harmful/safe)"
    )


def _add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="the offline judge: train/cache it, validate it, or score a file",
        description="The default judge: a three-way verdict (refusal / compliance / other) per answer, "
        "reading prompt and answer together. Without an action: train or load it and print its metadata.",
    )
    add_flags(p, JudgeCommand)
    actions = p.add_subparsers(dest="action")
    score = actions.add_parser("score", help="judge every (prompt, answer) of a JSONL file")
    add_flags(score, ScoreCommand)
    score.set_defaults(spec=ScoreCommand)
    validate = actions.add_parser("validate", help="precision/recall/F1/accuracy and the kinds' confusion")
    add_flags(validate, ValidateCommand)
    validate.set_defaults(spec=ValidateCommand)
    p.set_defaults(func=_run_judge, spec=JudgeCommand)


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


def _run_tsne(spec: Any) -> int:
    from .data.records import sample_of
    from .data.resolve import load_records
    from .eval.tsne import tsne_figure, view_embeddings

    records = sample_of(load_records(spec.data), spec.num_samples, spec.seed, "num_samples", spec.data)
    views = {
        label: [] if adapters == "-" else [Path(a) for a in adapters.split(",") if a]
        for label, adapters in spec.views
    }
    embeddings = view_embeddings(spec.model, views, records, layer=spec.layer)
    print(tsne_figure(embeddings, spec.out, f"{spec.data} embeddings ({len(records)} samples)", spec.seed))
    return 0


EXECUTORS = ("local", "ray")


@dataclass(kw_only=True)
class RunCommand:
    config: Path = setting(help="grid YAML (see configs/)", positional=True)
    report: bool = setting(False, "build the report when the grid is done")
    executor: str = setting(
        "local",
        "where the stages run: local (this process, one after another) or ray (a Ray task per stage, "
        "with the grid's resources: section; needs pip install 'vaccine[ray]')",
        choices=EXECUTORS,
    )
    address: str | None = setting(
        None,
        "the Ray cluster to run on, e.g. HEAD:6379 (default: $RAY_ADDRESS, else a new Ray on this machine)",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an experiment grid (align -> finetune -> evaluate -> store)",
        description="Validates the whole grid first, then runs the stages that are not cached yet, here or "
        "on a Ray cluster (--executor ray).",
    )
    add_flags(p, RunCommand)
    p.set_defaults(func=_run_grid, spec=RunCommand)


def _executor(args: argparse.Namespace) -> Any:
    """The executor the flags ask for; Ray is imported (and its absence reported) before any compute."""
    if args.executor == "local":
        if args.address is not None:
            raise ConfigError("--address: only with --executor ray")
        return None
    from .experiments.ray_executor import RayExecutor, import_ray

    import_ray()
    return RayExecutor(address=args.address)


def _run_grid(args: argparse.Namespace) -> int:
    from .experiments.grid import load_grid
    from .experiments.run import run_grid

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would evaluate and write the store
        raise ConfigError(
            "`vaccine run` drives a grid from one process; under a launcher, launch its stages instead "
            "(`accelerate launch -m vaccine align|finetune ...`), or give the grid a resources: section "
            "and run it with --executor ray; see the README's 'Many GPUs' and 'Many machines'"
        )
    executor = _executor(args)
    grid = load_grid(args.config)
    print(json.dumps(run_grid(grid, executor), indent=2))
    if args.report:
        return _report_grid(grid, grid.out / "report")
    return 0


@dataclass(kw_only=True)
class ReportCommand:
    source: Path = setting(help="a grid YAML or a results.sqlite file", positional=True)
    out: Path | None = setting(None, "report folder (default: the grid's out/report)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="Markdown + HTML report (paper's Table 1, plots) from a result store",
        description="Rebuilds the result store from the grid's row files (eval/*.row.json, the record of "
        "truth) first, then renders the report.",
    )
    add_flags(p, ReportCommand)
    p.set_defaults(func=_run_report, spec=ReportCommand)


def _report(store: Any, out: Path, references: tuple[str, ...] | None = None) -> int:
    from .experiments.report import build_report

    paths = build_report(store, out, **({"references": references} if references else {}))
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {paths['markdown']}  {paths['html']}")
    return 0


def _report_grid(grid: Any, out: Path) -> int:
    """The grid's report, from its store rebuilt from the row files."""
    from .experiments.index import index_grid, rows_dir, store_path
    from .experiments.stages import plan_cell

    if not store_path(grid).is_file() and not rows_dir(grid).is_dir():
        raise ConfigError(
            f"{store_path(grid)}: no result store (run the grid first: vaccine run CONFIG.yaml)"
        )
    plans = [plan_cell(grid, cell) for cell in grid.cells()]
    return _report(index_grid(grid, plans), out, tuple(grid.report["references"]))


def _run_report(args: argparse.Namespace) -> int:
    if args.source.suffix in (".yaml", ".yml"):
        from .experiments.grid import load_grid

        grid = load_grid(args.source)
        return _report_grid(grid, args.out or grid.out / "report")
    from .experiments.index import rebuild_index
    from .experiments.store import ResultStore

    store, rows = args.source, args.source.parent / "eval"
    if not store.is_file():
        raise ConfigError(f"{store}: no result store (run the grid first: vaccine run CONFIG.yaml)")
    # a store beside its grid's row files is rebuilt from them; a store on its own is read as it is
    index = rebuild_index(store, rows) if rows.is_dir() else ResultStore(store)
    return _report(index, args.out or store.parent / "report")


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, cache paths and installed assets")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .info import collect_info, format_info

    print(format_info(collect_info()))
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``command``, only that sub-command gets its generated flags (the others stay light)."""
    parser = argparse.ArgumentParser(
        prog="vaccine", description=f"Vaccine ({PAPER}): align, attack, evaluate."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stages(sub, command)
    _add_judge(sub)
    _add_run(sub)
    _add_report(sub)
    _add_info(sub)
    return parser


def _as_flag(err: SettingError, spec: type) -> SettingError:
    """The error with its setting spelled as the flag the user typed (``--num-samples``)."""
    named = {f.name: f.metadata.get("flag", flag_name(f.name)) for f in fields(spec)}
    return err.written_as(named[err.setting]) if err.setting in named else err


def _leave_process_group() -> None:
    """Under a launcher, leave the process group before the interpreter exits: a gloo group left to
    interpreter shutdown can abort a rank after its work is done ("terminate called without an active
    exception", pytorch/pytorch#190489), which the launcher reports as a failed run."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group to leave
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(next((w for w in words if not w.startswith("-")), "")).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except SettingError as err:
        print(f"vaccine {args.command}: error: {_as_flag(err, args.spec)}", file=sys.stderr)
        return 2
    except VaccineError as err:
        print(f"vaccine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaccine {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
