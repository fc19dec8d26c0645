"""The evaluation stage: Harmful Score, Fine-tune Accuracy and (optionally) drift of one model.

HS = % of answers to held-out harmful prompts that the judge calls compliance; FA = % of the task's
test answers that the task's scorer accepts. Both use batched greedy generation. The result is one JSON
file with the metrics (each share with its 95% interval), the full config, the judge's version and measured
error, per-prompt records and timings, written atomically. Prompts may come with images (a vision-language
model and VLGuard's test pairs): they are answered with their images, and the judges read prompt and answer
text as for any model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaccine import __version__
from vaccine.data.context import DataContext
from vaccine.data.records import Record, sample_of
from vaccine.data.resolve import load_records
from vaccine.eval.drift import drift_and_losses
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.io import write_json_atomic
from vaccine.judges import Judge, check_judge_spec, get_judge, judge_version
from vaccine.judges.kinds import COMPLIANCE, OTHER, REFUSAL, is_refusal
from vaccine.run_folders import load_merged_model
from vaccine.settings import ModelSettings, TrainingSettings, require, same_as, setting
from vaccine.stats import share_with_interval
from vaccine.tasks import get_task

TASK_MAX_NEW_TOKENS = {"sst2": 8, "agnews": 8, "gsm8k": 256, "instruct": 128}


@dataclass(kw_only=True)
class EvaluateSpec(ModelSettings):
    """What to evaluate and how; validated before any model is loaded. Every field is also a flag of
    ``vaccine evaluate``."""

    out: Path = setting(help="result JSON file")
    adapters: list[Path] = setting(
        factory=list,
        help="adapter or run folder, merged in order (Double-LoRA: the alignment one, then the fine-tuning "
        "one); repeatable",
        flag="--adapter",
    )
    harmful_prompts: str = setting(
        "advbench", "advbench, harmbench, or a prompt file (.txt one per line, .jsonl, .json, .csv)"
    )
    # all: AdvBench's 520 give a 95% half-width <= 4.3 points
    num_harmful: int | None = setting(None, "a seeded sample of the prompts (default: all of them)")
    task: str | None = setting("sst2", "sst2, gsm8k, agnews, instruct, or 'none'")
    task_source: str | None = setting(None, "local file or hub id for the task (default: embedded)")
    num_task: int | None = setting(200, "a seeded sample of the task's test split")
    strict: bool = setting(False, "strict exact-label scoring instead of the paper's")
    judge: str = setting("default", "default (the offline pair judge), refusal, hf-classifier:ID, guard:ID")
    max_new_tokens: int = same_as(GenerationSettings, "max_new_tokens")
    task_max_new_tokens: int | None = setting(None, "answer length for the task (default: per task, sst2: 8)")
    batch_size: int = same_as(GenerationSettings, "batch_size")
    engine: str = same_as(GenerationSettings, "engine", flag="--generation-engine", aliases=("--engine",))
    benign_prompts: str | None = setting(
        "benign-eval", "held-out benign prompts for the over-refusal rate (a split or a file), or 'none'"
    )
    num_benign: int | None = setting(100, "a seeded sample of the benign prompts")
    reference_adapters: list[Path] | None = setting(
        None,
        "adapters of the aligned model: adds embedding drift and alignment loss",
        flag="--reference-adapter",
    )
    drift_data: str = setting("alignment", "the alignment data drift is measured on")
    num_drift: int = setting(32, "alignment samples for drift")
    drift_max_length: int = same_as(
        TrainingSettings,
        "max_length",
        help="tokens per alignment sample for drift: the alignment's max_length",
    )
    seed: int = setting(42, "seeds every sample of prompts")

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)
        self.out = Path(self.out)
        self.task = None if self.task == "none" else self.task
        self.benign_prompts = None if self.benign_prompts == "none" else self.benign_prompts
        for name in ("num_harmful", "num_task", "num_benign"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, f"must be >= 1; got {value}")
        if self.task is not None:
            get_task(self.task)
        check_judge_spec(self.judge)
        self.generation = GenerationSettings(self.max_new_tokens, self.batch_size, self.template, self.engine)

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            key: [str(p) for p in value]
            if isinstance(value, list)
            else str(value)
            if isinstance(value, Path)
            else value
            for key, value in plain.items()
        }


def _images(records: list[Record]) -> list[str | None] | None:
    """The records' image paths for generation, or None when all of them are text (the text path)."""
    images = [r.image for r in records]
    return images if any(image is not None for image in images) else None


def _with_images(rows: list[dict[str, Any]], images: list[str | None] | None) -> list[dict[str, Any]]:
    """Per-prompt result rows with the image each prompt was asked with (image+text prompts only)."""
    if images is None:
        return rows
    return [
        {**row, "image": image} if image is not None else row for row, image in zip(rows, images, strict=True)
    ]


def harmful_score(model: Any, tokenizer: Any, spec: EvaluateSpec) -> dict[str, Any]:
    """Answer the harmful prompts, then judge the answers (``judge_answers``). Image+text prompts (e.g.
    VLGuard's unsafe test pairs) are answered with their images; the judge reads prompt and answer text."""
    records = sample_of(
        load_records(spec.harmful_prompts),
        spec.num_harmful,
        spec.seed,
        "num_harmful",
        spec.harmful_prompts,
    )
    prompts, images = [r.prompt for r in records], _images(records)
    judge = get_judge(spec.judge)  # a judge that cannot load fails before the generation, not after it
    started = time.perf_counter()
    answers = generate(model, tokenizer, prompts, spec.generation, desc="harmful prompts", images=images)
    seconds = time.perf_counter() - started
    judged = judge_answers(prompts, answers, judge)
    judged["records"] = _with_images(judged["records"], images)
    judged["timings"].update(
        {"hs_generation_s": seconds, "hs_answers_per_s": len(prompts) / max(seconds, 1e-9)}
    )
    return judged


def judge_answers(prompts: list[str], answers: list[str], judge: Judge) -> dict[str, Any]:
    """HS = % of answers the judge calls compliance, beside the refusal and other shares, each with its
    95% Wilson interval: a model that babbles is not safe either, so 'other' is shown, not hidden."""
    started = time.perf_counter()
    verdicts = judge.verdicts(prompts, answers)
    metrics: dict[str, Any] = {"num_harmful": len(prompts)}
    for kind, name in ((COMPLIANCE, "harmful_score"), (REFUSAL, "refusal_share"), (OTHER, "other_share")):
        share = share_with_interval([v.kind == kind for v in verdicts])
        metrics[name], metrics[f"{name}_ci"] = share["value"], share["ci"]
    return {
        "metrics": metrics,
        "judge": judge.error_rates(),
        "records": [
            {
                "prompt": p,
                "answer": a,
                "kind": v.kind,
                "flagged": v.kind == COMPLIANCE,
                "score": round(v.score, 4),
            }
            for p, a, v in zip(prompts, answers, verdicts, strict=True)
        ],
        "timings": {"judge_s": time.perf_counter() - started},
    }


def rejudge(previous: dict[str, Any], spec: EvaluateSpec) -> dict[str, Any]:
    """A result for ``spec`` from an earlier evaluation of the same model and prompts under another judge:
    the answers, FA and drift are kept, only the harmful answers are judged again (seconds, not minutes).
    Written to ``spec.out`` atomically, like a computed result."""
    earlier = previous["records"]["harmful"]
    judged = judge_answers(
        [r["prompt"] for r in earlier], [r["answer"] for r in earlier], get_judge(spec.judge)
    )
    judge_metrics = {
        k for k in previous["metrics"] if k.startswith(("harmful_score", "refusal_share", "other_share"))
    }
    metrics = {k: v for k, v in previous["metrics"].items() if k not in judge_metrics} | judged["metrics"]
    result = {
        **previous,
        "metrics": metrics,
        "config": {**spec.to_dict(), "judge_version": judge_version(spec.judge)},
        "judge": judged["judge"],
        "records": {**previous["records"], "harmful": judged["records"]},
        "timings": {**previous["timings"], **judged["timings"]},
        "answers_from": previous.get("date"),
        "vaccine_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(spec.out, result)
    return result


BENIGN_MAX_NEW_TOKENS = 32  # a refusal shows in the opening words


def benign_refusal_rate(model: Any, tokenizer: Any, spec: EvaluateSpec) -> dict[str, Any]:
    """Over-refusal: % of held-out benign prompts (many only sound sensitive: "Who killed JFK?") that the
    model refuses, by the refusal detector. An alignment that refuses everything scores 0 HS and is useless;
    this number shows it. With VLGuard's safe-safe pairs (image+text) it is the refusal rate on harmless
    requests about harmless images that VLGuard reports beside its attack success rates."""
    records = sample_of(
        load_records(spec.benign_prompts), spec.num_benign, spec.seed, "num_benign", spec.benign_prompts
    )
    settings = dataclasses.replace(
        spec.generation, max_new_tokens=min(spec.generation.max_new_tokens, BENIGN_MAX_NEW_TOKENS)
    )
    images = _images(records)
    started = time.perf_counter()
    answers = generate(
        model, tokenizer, [r.prompt for r in records], settings, desc="benign prompts", images=images
    )
    refused = [bool(a.strip()) and is_refusal(a) for a in answers]
    share = share_with_interval(refused)
    rows = [
        {"prompt": r.prompt, "answer": a, "refused": x}
        for r, a, x in zip(records, answers, refused, strict=True)
    ]
    return {
        "metrics": {"benign_refusal_rate": share["value"], "benign_refusal_rate_ci": share["ci"]},
        "records": _with_images(rows, images),
        "timings": {"benign_generation_s": time.perf_counter() - started},
    }


def finetune_accuracy(model: Any, tokenizer: Any, spec: EvaluateSpec) -> dict[str, Any]:
    task = get_task(spec.task)
    test = task.records("test", spec.task_source)
    records = sample_of(test, spec.num_task, spec.seed, "num_task", f"the {spec.task} test split")
    max_new = spec.task_max_new_tokens or TASK_MAX_NEW_TOKENS.get(task.name, spec.generation.max_new_tokens)
    settings = dataclasses.replace(spec.generation, max_new_tokens=max_new)
    started = time.perf_counter()
    answers = generate(model, tokenizer, [r.prompt for r in records], settings, desc=f"{task.name} test")
    correct = [task.is_correct(a, r, strict=spec.strict) for a, r in zip(answers, records, strict=True)]
    return {
        "finetune_accuracy": task.accuracy(answers, records, strict=spec.strict),
        "finetune_accuracy_ci": share_with_interval(correct)["ci"],
        "records": [
            {
                "prompt": r.prompt,
                "answer": a,
                "label": r.label,
                "correct": ok,
            }
            for r, a, ok in zip(records, answers, correct, strict=True)
        ],
        "timings": {"fa_generation_s": time.perf_counter() - started},
    }


def drift_metrics(model: Any, tokenizer: Any, spec: EvaluateSpec) -> dict[str, Any]:
    """Drift and alignment loss against the reference (aligned) model, on a fixed alignment sample."""
    started = time.perf_counter()
    reference, _ = load_merged_model(
        spec.model, spec.reference_adapters or [], dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    records = sample_of(
        load_records(spec.drift_data), spec.num_drift, spec.seed, "num_drift", spec.drift_data
    )
    data = DataContext(tokenizer, spec.generation.template, spec.drift_max_length)
    batches = list(data.loader(records, spec.generation.batch_size, spec.seed))
    metrics: dict[str, Any] = drift_and_losses(reference, model, batches)
    return {**metrics, "timings": {"drift_s": time.perf_counter() - started}}


def run_evaluate(spec: EvaluateSpec) -> dict[str, Any]:
    """Evaluate; returns the result also written to ``spec.out``."""
    started = time.perf_counter()
    model, tokenizer = load_merged_model(
        spec.model, spec.adapters, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    timings: dict[str, float] = {"load_s": time.perf_counter() - started}
    metrics: dict[str, Any] = {}
    records: dict[str, Any] = {}
    hs = harmful_score(model, tokenizer, spec)
    metrics.update(hs["metrics"])
    records["harmful"] = hs["records"]
    judge_error = hs["judge"]
    timings.update(hs["timings"])
    if spec.task is not None:
        fa = finetune_accuracy(model, tokenizer, spec)
        metrics["finetune_accuracy"], records["task"] = fa["finetune_accuracy"], fa["records"]
        metrics["finetune_accuracy_ci"] = fa["finetune_accuracy_ci"]
        timings.update(fa["timings"])
    if spec.benign_prompts is not None:
        benign = benign_refusal_rate(model, tokenizer, spec)
        metrics.update(benign["metrics"])
        records["benign"] = benign["records"]
        timings.update(benign["timings"])
    if spec.reference_adapters is not None:
        drift = drift_metrics(model, tokenizer, spec)
        timings.update(drift.pop("timings"))
        metrics.update(drift)
    timings["total_s"] = time.perf_counter() - started
    result = {
        "metrics": metrics,
        "config": {**spec.to_dict(), "judge_version": judge_version(spec.judge)},
        "judge": judge_error,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "records": records,
        "vaccine_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(spec.out, result)
    return result
