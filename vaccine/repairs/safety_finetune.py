"""Post-hoc safety fine-tuning (VLGuard's post-hoc strategy, text form): a short LoRA fine-tune of the
attacked model on safety pairs mixed with helpful pairs the attacked model answers itself.

The helpful half keeps what the user's fine-tune taught (the attacked model's own answers, as the
alignment's self-distillation keeps the base model's voice); the safety half restores the refusals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import set_seed

from vaccine.callbacks import JsonlLogger
from vaccine.data.context import DataContext
from vaccine.lora import attach_lora
from vaccine.metered import MeteredTrainer
from vaccine.repairs.base import REPAIRS, RepairMethod, RepairRun
from vaccine.run_folders import load_merged_model, train_and_save
from vaccine.self_distill import CACHE_FILE, AlignmentMix, alignment_records
from vaccine.settings import setting


@REPAIRS.register("safety-finetune")
@dataclass(kw_only=True)
class SafetyFinetune(RepairMethod, AlignmentMix):
    """Fine-tune the attacked model briefly on refusals mixed with its own helpful answers."""

    data: str = setting("alignment-harm", "safety pairs (refusals of requests for harm)")
    num_samples: int | None = setting(100, "pairs in the repair set, safety and helpful together")
    helpful_data: str | None = setting("benign", "benign prompts the attacked model answers itself")
    helpful_share: float = setting(0.5, "share of num_samples that is helpful")

    def repaired_adapters(self, attacked: list[Path], adapter: Path) -> list[Path]:
        return [*attacked, adapter]

    def repair(self, spec: RepairRun) -> dict[str, Any]:
        model, tokenizer = load_merged_model(
            spec.model, spec.attacked, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
        )
        records = alignment_records(
            self, model, tokenizer, template=spec.template, seed=spec.seed, cache=spec.out / CACHE_FILE
        )
        set_seed(spec.seed)  # the LoRA init does not depend on how long self-distillation ran
        data = DataContext(tokenizer, spec.template, spec.max_length)
        trainer = MeteredTrainer(
            model=attach_lora(model, spec.lora),
            args=spec.training,
            train_dataset=data.dataset(records),
            data_collator=data.collator(),
            callbacks=[JsonlLogger(spec.out / "log.jsonl")],
        )
        return train_and_save(trainer, spec.out, samples=len(records))
