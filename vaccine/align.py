"""The alignment stage: base model + alignment data -> a LoRA adapter (or, with ``full_finetune``, every
weight) trained with SFT or Vaccine.

Readable top to bottom (a torchtune-style recipe): validate the spec, load data and model, attach LoRA,
train with :class:`VaccineTrainer`, write the adapter, the resolved config and the log into one folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed

from .callbacks import JsonlLogger
from .data.context import DataContext
from .io import write_json_atomic
from .lora import attach_lora, freeze_outside_language_model
from .methods import METHODS, AlignMethod
from .models import load_model_and_tokenizer
from .run_folders import train_and_save
from .self_distill import CACHE_FILE, AlignmentMix, alignment_records
from .settings import LoraFields, ModelSettings, TrainingSettings, require, setting


@dataclass(kw_only=True)
class AlignSpec(ModelSettings, TrainingSettings, LoraFields, AlignmentMix):
    """Everything one alignment run needs, validated before any compute.

    ``method`` names an alignment-stage method of the registry (sft, vaccine, repnoise) and
    ``method_args`` its knobs (e.g. rho, tau). Both are checked here, when the spec is built, so a typo
    fails before a model is loaded. Every field is also a flag of ``vaccine align``.
    """

    method: str = setting(help="alignment method: sft, vaccine, repnoise")
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
    full_finetune: bool = setting(
        False,
        "train every weight of the model instead of a LoRA adapter (of a VLM: its language model and head; "
        "the lora_* settings are then unused; "
        "the weights are saved as adapter/full_weights.safetensors, which every later stage reads); "
        "issue 14's LoRA-versus-full test",
    )

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)
        TrainingSettings.__post_init__(self)
        LoraFields.__post_init__(self)
        AlignmentMix.__post_init__(self)
        require(
            isinstance(self.full_finetune, bool),
            "full_finetune",
            f"must be true or false; got {self.full_finetune!r}",
        )
        self.self_distill_cache = Path(self.self_distill_cache or self.out / CACHE_FILE)
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


def run_alignment(spec: AlignSpec) -> dict[str, Any]:
    """Train the alignment adapter; returns the run summary also written to ``out/summary.json``."""
    set_seed(spec.training.seed)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    spec.out.mkdir(parents=True, exist_ok=True)
    records = alignment_records(
        spec, model, tokenizer, template=spec.template, seed=spec.seed, cache=spec.self_distill_cache
    )
    if spec.helpful_share > 0:
        set_seed(spec.training.seed)  # the LoRA init does not depend on how long self-distillation ran
    model = freeze_outside_language_model(model) if spec.full_finetune else attach_lora(model, spec.lora)
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
