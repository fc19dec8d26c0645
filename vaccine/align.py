"""The alignment stage: base model + alignment data -> a LoRA adapter trained with SFT or Vaccine.

Readable top to bottom (a torchtune-style recipe): validate the spec, load data and model, attach LoRA,
train with :class:`VaccineTrainer`, write the adapter, the resolved config and the log into one folder.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed

from .callbacks import JsonlLogger
from .data.context import DataContext
from .data.records import Record, sample_of
from .data.resolve import load_records
from .eval.generate import GenerationSettings
from .io import write_json_atomic
from .lora import attach_lora
from .methods import METHODS, AlignMethod
from .models import load_model_and_tokenizer
from .run_folders import train_and_save
from .self_distill import CACHE_FILE, self_distill
from .settings import LoraFields, ModelSettings, TrainingSettings, require, setting


@dataclass(kw_only=True)
class AlignSpec(ModelSettings, TrainingSettings, LoraFields):
    """Everything one alignment run needs, validated before any compute.

    ``method`` names an alignment-stage method of the registry (sft, vaccine, repnoise) and
    ``method_args`` its knobs (e.g. rho, tau). Both are checked here, when the spec is built, so a typo
    fails before a model is loaded. Every field is also a flag of ``vaccine align``.
    """

    method: str = setting(help="alignment method: sft, vaccine, repnoise")
    data: str = setting("alignment", "safety data: a built-in split, a local .json/.jsonl/.csv, or hf:ID")
    num_samples: int | None = setting(None, "a seeded random subset of the data (default: all of it)")
    helpful_data: str | None = setting(
        None, "benign prompts mixed into the alignment data (e.g. 'benign'); the model answers them itself"
    )
    helpful_share: float = setting(0.0, "share of num_samples that is helpful")
    self_distill_tokens: int = setting(96, "length of the self-distilled answers")
    self_distill_cache: Path | None = setting(
        None,
        "JSONL of self-distilled answers by prompt, shareable between alignments of one base model "
        "(default: OUT/self_distilled.jsonl)",
    )
    rho: float | None = setting(None, "vaccine: perturbation budget (the method's default: 2.0)")
    tau: int | None = setting(None, "vaccine: perturb every tau-th step (the method's default: 1)")
    method_args: dict[str, Any] = setting(
        factory=dict, help="a method knob (repeatable)", flag="--method-arg"
    )

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)
        TrainingSettings.__post_init__(self)
        LoraFields.__post_init__(self)
        self.self_distill_cache = Path(self.self_distill_cache or self.out / CACHE_FILE)
        require(
            self.num_samples is None or self.num_samples >= 1,
            "num_samples",
            f"must be >= 1; got {self.num_samples}",
        )
        require(
            0.0 <= self.helpful_share < 1.0, "helpful_share", f"must be in [0, 1); got {self.helpful_share}"
        )
        require(
            self.helpful_share == 0 or (self.helpful_data is not None and self.num_samples is not None),
            "helpful_share",
            "> 0 needs helpful_data and num_samples",
        )
        require(
            self.self_distill_tokens >= 1,
            "self_distill_tokens",
            f"must be >= 1; got {self.self_distill_tokens}",
        )
        shortcuts = {k: v for k, v in (("rho", self.rho), ("tau", self.tau)) if v is not None}
        self.method_obj: AlignMethod = METHODS.build(self.method, **{**self.method_args, **shortcuts})
        self.training: TrainingArguments = self.method_obj.build_config(self.training_arguments(self.dtype))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON: what was run, with every default filled in."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain["out"] = str(self.out)
        plain["self_distill_cache"] = str(self.self_distill_cache)
        plain["lora"] = dataclasses.asdict(self.lora)
        plain["method_knobs"] = dataclasses.asdict(self.method_obj)
        plain["training"] = self.training.to_dict()
        return plain


def alignment_records(spec: AlignSpec, model: Any, tokenizer: Any) -> list[Record]:
    """The safety pairs, plus (with ``helpful_share``) benign prompts answered by the base model itself,
    shuffled together: round(num_samples * helpful_share) helpful pairs, the rest safety pairs."""
    seed = spec.training.seed
    helpful_count = round((spec.num_samples or 0) * spec.helpful_share)
    safety_count = None if spec.num_samples is None else spec.num_samples - helpful_count
    records = sample_of(load_records(spec.data), safety_count, seed, "num_samples", spec.data)
    if helpful_count == 0:
        return records
    helpful = sample_of(
        load_records(spec.helpful_data), helpful_count, seed, "num_samples", spec.helpful_data
    )
    settings = GenerationSettings(spec.self_distill_tokens, batch_size=32, template=spec.template)
    mixed = records + self_distill(model, tokenizer, helpful, settings, spec.self_distill_cache)
    random.Random(seed).shuffle(mixed)
    return mixed


def run_alignment(spec: AlignSpec) -> dict[str, Any]:
    """Train the alignment adapter; returns the run summary also written to ``out/summary.json``."""
    set_seed(spec.training.seed)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    spec.out.mkdir(parents=True, exist_ok=True)
    records = alignment_records(spec, model, tokenizer)
    if spec.helpful_share > 0:
        set_seed(spec.training.seed)  # the LoRA init does not depend on how long self-distillation ran
    model = attach_lora(model, spec.lora)
    data = DataContext(tokenizer, spec.template, spec.max_length)
    write_json_atomic(spec.out / "config.json", spec.to_dict())
    trainer = spec.method_obj.trainer_class(
        model=model,
        args=spec.training,
        train_dataset=spec.method_obj.train_dataset(records, data),
        data_collator=spec.method_obj.collator(data),
        callbacks=[JsonlLogger(spec.out / "log.jsonl")],
        **spec.method_obj.trainer_kwargs(data),
    )
    return train_and_save(trainer, spec.out, method=spec.method, samples=len(records))
