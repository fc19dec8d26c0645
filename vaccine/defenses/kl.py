"""KL regularization toward the aligned model, over the VOCABULARY of each answer token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from vaccine.defenses.registry import DEFENSES
from vaccine.errors import ConfigError
from vaccine.finetune_trainer import FinetuneContext, FinetuneDefense, FinetuneTrainer
from vaccine.lora import read_adapter_config

REFERENCE_ADAPTER = "kl_reference"


def token_kl(reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of KL(p_ref || p) where p = softmax over the vocabulary (last axis).

    The official code took the softmax over the sequence axis, which compares positions, not tokens.
    Position t predicts label t+1, so the mask is the shifted labels.
    """
    mask = labels[:, 1:] != -100
    if not mask.any():
        return logits.sum() * 0.0
    ref = F.log_softmax(reference_logits[:, :-1][mask].float(), dim=-1)
    cur = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    return F.kl_div(cur, ref, log_target=True, reduction="batchmean")


@DEFENSES.register("kl")
@dataclass
class KL(FinetuneDefense):
    """lam * KL(aligned model's next-token distribution || current model's), on the answer tokens.

    The reference is the same weights without the fine-tuning adapter (Double-LoRA and Non-aligned:
    ``disable_adapter()``; Single-LoRA: a frozen copy of the alignment adapter), never a second model.
    """

    lam: float = 1.0
    needs_full_logits: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"kl: lam must be >= 0; got {self.lam}")
        self._single = False

    def setup(self, trainer: FinetuneTrainer, context: FinetuneContext) -> None:
        self._single = context.lora_mode == "single" and context.aligned_adapter is not None
        if self._single:
            read_adapter_config(context.aligned_adapter)
            trainer.model.load_adapter(
                context.aligned_adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False
            )

    @contextmanager
    def _reference(self, model: torch.nn.Module) -> Iterator[None]:
        if not self._single:
            with model.disable_adapter():
                yield
            return
        active = model.active_adapter
        model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            model.set_adapter(active)  # also restores requires_grad on the trained adapter

    def penalty(self, trainer: FinetuneTrainer, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any):
        peft_model = trainer.unwrap(model)
        forward = {k: v for k, v in inputs.items() if k != "labels"}  # a VLM's pixels too
        with torch.no_grad(), self._reference(peft_model):
            reference = peft_model(**forward).logits
        return self.lam * token_kl(reference, outputs.logits, inputs["labels"])
