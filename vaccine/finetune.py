"""The attack stage (fine-tuning-as-a-service): fine-tune an aligned model on a user's harmful-mixed data.

Read top to bottom: build the user's data set (n samples of a benign task, floor(p*n) of them harmful),
let the fine-tune-stage defense change it, put LoRA on the aligned model (Double-LoRA: merge the alignment
adapter, train a fresh one; Single-LoRA: keep training the alignment adapter; no aligned adapter:
Non-aligned), train, and write the adapter, the resolved config and the log into one folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed

from vaccine.callbacks import JsonlLogger
from vaccine.data.context import DataContext
from vaccine.data.mixing import harmful_count, mix_harmful, validate_mix
from vaccine.data.records import Record, seeded_subset
from vaccine.data.resolve import load_records
from vaccine.data.splits import assert_disjoint, evaluation_prompts
from vaccine.defenses import DEFENSES
from vaccine.eval.drift import DriftTracker
from vaccine.finetune_trainer import FinetuneContext, FinetuneDefense, FinetuneTrainer
from vaccine.io import write_json_atomic
from vaccine.lora import attach_lora, load_adapter, load_merged
from vaccine.models import load_model_and_tokenizer
from vaccine.run_folders import adapter_dir, train_and_save
from vaccine.settings import LoraFields, ModelSettings, TrainingSettings, check_choice, require, setting
from vaccine.tasks import get_task

LORA_MODES = ("double", "single")
HELD_OUT_SETS = ("advbench", "harmbench")


@dataclass(kw_only=True)
class FinetuneSpec(ModelSettings, TrainingSettings, LoraFields):
    """Everything one fine-tuning (attack) run needs, validated before any compute. Every field is also a
    flag of ``vaccine finetune``; the learning rate and epochs default to the paper's fine-tuning ones."""

    epochs: float = setting(20.0, "training epochs (the paper's fine-tuning: 20)")
    lr: float = setting(1e-5, "peak learning rate (the paper's fine-tuning: 1e-5)")
    aligned: Path | None = setting(
        None, "alignment run folder or adapter folder (none: attack the base model)"
    )
    task: str = setting("sst2", "benign task: sst2, gsm8k, agnews, instruct")
    task_source: str | None = setting(None, "local file or hub id for the task (default: embedded)")
    # long forms: launchers (torchrun, accelerate launch) read "--p"/"--n" as abbreviations of their own flags
    p: float = setting(0.1, "harmful ratio, [0, 1]", aliases=("--harmful-ratio",))
    n: int = setting(1000, "fine-tuning samples", aliases=("--num-train",))
    harmful: str = setting("harmful", "harmful data: built-in split, file or hf:ID")
    alignment_data: str = setting("alignment", "safety data used by ewc, vlguard, lisa")
    lora_mode: str = setting(
        "double",
        "double: merge the alignment adapter, train a new one; single: keep training it",
        choices=LORA_MODES,
    )
    defense: str = setting("none", "fine-tune-stage defense: none, ewc, kl, vlguard, lisa")
    defense_args: dict[str, Any] = setting(
        factory=dict, help="a defense knob (repeatable)", flag="--defense-arg"
    )
    drift_every: int = setting(
        0, "every K steps log alignment loss and embedding drift to drift.jsonl (0: off)"
    )
    drift_samples: int = setting(16, "alignment samples used for drift")

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)
        TrainingSettings.__post_init__(self)
        LoraFields.__post_init__(self)
        require(self.drift_every >= 0, "drift_every", f"must be >= 0; got {self.drift_every}")
        require(self.drift_samples >= 1, "drift_samples", f"must be >= 1; got {self.drift_samples}")
        self.aligned = Path(self.aligned) if self.aligned is not None else None
        validate_mix(self.p, self.n)
        check_choice(self.lora_mode, "lora_mode", LORA_MODES)
        require(
            self.lora_mode == "double" or self.aligned is not None,
            "aligned",
            "is needed by lora_mode single (it keeps training the alignment adapter)",
        )
        get_task(self.task)
        self.defense_obj: FinetuneDefense = DEFENSES.build(self.defense, **self.defense_args)
        self.training = TrainingArguments(**self.training_arguments(self.dtype))

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain.update(out=str(self.out), aligned=str(self.aligned) if self.aligned else None)
        plain["lora"] = dataclasses.asdict(self.lora)
        plain["defense_knobs"] = dataclasses.asdict(self.defense_obj)
        plain["training"] = self.training.to_dict()
        return plain


def user_dataset(spec: FinetuneSpec) -> tuple[list[Record], dict[str, int]]:
    """The user's upload: floor(p*n) harmful + the rest benign, shuffled, checked against held-out data."""
    task = get_task(spec.task)
    benign = task.records("train", spec.task_source)
    harmful = load_records(spec.harmful)
    seed = spec.training.seed
    mixed = mix_harmful(
        benign,
        harmful,
        spec.p,
        spec.n,
        seed,
        benign_name=f"{spec.task} train split",
        harmful_name=f"harmful data ({spec.harmful})",
    )
    for name in HELD_OUT_SETS:
        assert_disjoint(mixed, evaluation_prompts(name))
    assert_disjoint(mixed, task.records("test", spec.task_source))
    return mixed, {"harmful": harmful_count(spec.p, spec.n), "benign": spec.n - harmful_count(spec.p, spec.n)}


def prepare_model(spec: FinetuneSpec) -> tuple[Any, Any]:
    """The model to attack, with the adapter that will be trained (see the module docstring)."""
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    if spec.aligned is None:
        return attach_lora(model, spec.lora), tokenizer
    if spec.lora_mode == "single":
        return load_adapter(model, adapter_dir(spec.aligned), trainable=True), tokenizer
    return attach_lora(load_merged(model, adapter_dir(spec.aligned)), spec.lora), tokenizer


def drift_tracking(spec: FinetuneSpec, model: Any, data: DataContext) -> list[DriftTracker]:
    """Alignment loss and embedding drift every ``drift_every`` steps, against the model before training."""
    if spec.drift_every == 0:
        return []
    alignment = load_records(spec.alignment_data)
    sample = seeded_subset(alignment, spec.drift_samples, spec.training.seed)
    tracker = DriftTracker(
        list(data.loader(sample, 8, spec.training.seed)), spec.drift_every, spec.out / "drift.jsonl"
    )
    tracker.set_reference(
        model
    )  # before a resumed run loads its checkpoint: the reference is the aligned model
    return [tracker]


def run_finetune(spec: FinetuneSpec) -> dict[str, Any]:
    """Fine-tune on the user's data; returns the summary also written to ``out/summary.json``."""
    set_seed(spec.training.seed)
    records, counts = user_dataset(spec)
    model, tokenizer = prepare_model(spec)
    data = DataContext(tokenizer, spec.template, spec.max_length)
    alignment = load_records(spec.alignment_data) if spec.defense_obj.uses_alignment_data else []
    adapter = str(adapter_dir(spec.aligned)) if spec.aligned else None
    context = FinetuneContext(data, alignment, adapter, spec.lora_mode, spec.training.seed)
    records = spec.defense_obj.prepare_data(records, context)
    spec.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.out / "config.json", spec.to_dict())
    callbacks = [JsonlLogger(spec.out / "log.jsonl"), *drift_tracking(spec, model, data)]
    trainer = FinetuneTrainer(
        model=model,
        args=spec.training,
        train_dataset=data.dataset(records),
        data_collator=data.collator(),
        callbacks=callbacks,
        defense=spec.defense_obj,
        context=context,
    )
    return train_and_save(
        trainer,
        spec.out,
        defense=spec.defense,
        aligned=str(spec.aligned) if spec.aligned else None,
        lora_mode=spec.lora_mode,
        samples=len(records),
        **{f"{kind}_samples": count for kind, count in counts.items()},
    )
