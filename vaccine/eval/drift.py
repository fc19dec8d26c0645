"""Harmful embedding drift (the paper's diagnosis) and the alignment loss, on a fixed alignment sample.

Drift compares each decoder layer's attention output (the same modules Vaccine perturbs) of a reference
model, the aligned model before fine-tuning, with those of the current model. Default: the mean over samples
and layers of the L2 distance over a sample's real tokens (padding excluded, so the number does not depend
on batching); ``reduction="sum_sq"`` is the official code's squared-Frobenius sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from vaccine.perturb import capture_outputs, find_attention_modules

Reduction = Literal["mean_l2", "sum_sq"]


@torch.no_grad()
def attention_outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's attention output on ``batch`` (eval mode, no gradients), padding zeroed."""
    modules = [m for _, m in find_attention_modules(model)]
    was_training = model.training
    model.eval()
    with capture_outputs(modules) as outputs:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    model.train(was_training)
    keep = batch["attention_mask"].unsqueeze(-1).float()
    return [o.float() * keep for o in outputs]


def layer_distances(reference: list[torch.Tensor], current: list[torch.Tensor]) -> torch.Tensor:
    """(samples, layers) L2 distances; padded positions are zero in both, so they add nothing."""
    return torch.stack([(c - r).flatten(1).norm(dim=1) for r, c in zip(reference, current, strict=True)], 1)


def drift_value(distances: torch.Tensor, reduction: Reduction = "mean_l2") -> float:
    if reduction == "mean_l2":
        return distances.mean().item()
    return distances.pow(2).sum().item()


@torch.no_grad()
def alignment_loss(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """Token-weighted mean loss of ``model`` on the alignment sample (how much of the alignment is left)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        count = int((batch["labels"][:, 1:] != -100).sum())
        total += model(**batch).loss.item() * count
        tokens += count
    model.train(was_training)
    return total / max(tokens, 1)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


class DriftTracker(TrainerCallback):
    """Every ``every`` fine-tuning steps: alignment loss and embedding drift against the model as it was
    when training began (the aligned model, in every LoRA mode). Results go to ``self.history`` and, when a
    ``path`` is given, to a JSONL file, one line per measurement."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], every: int, path: Any = None) -> None:
        self.batches = batches
        self.every = every
        self.path = path
        self.history: list[dict[str, float]] = []
        self._reference: list[list[torch.Tensor]] = []

    def _measure(self, model: torch.nn.Module, step: int) -> None:
        device = next(model.parameters()).device
        batches = [_to(b, device) for b in self.batches]
        distances = torch.cat(
            [
                layer_distances(r, attention_outputs(model, b))
                for r, b in zip(self._reference, batches, strict=True)
            ]
        )
        row = {
            "step": step,
            "alignment_loss": alignment_loss(model, batches),
            "drift": drift_value(distances),
            "drift_sum_sq": drift_value(distances, "sum_sq"),
        }
        self.history.append(row)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def set_reference(self, model: torch.nn.Module) -> None:
        """Record the reference outputs; call it before a resumed run loads its checkpoint."""
        device = next(model.parameters()).device
        self._reference = [attention_outputs(model, _to(b, device)) for b in self.batches]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self._reference:
            self.set_reference(model)
        if state.global_step == 0:
            self._measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            self._measure(model, state.global_step)


def embedding_drift(
    reference: torch.nn.Module,
    current: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    reduction: Reduction = "mean_l2",
) -> float:
    """Drift between a reference (aligned) model and a current (fine-tuned) one on ``batches``."""
    distances = torch.cat(
        [layer_distances(attention_outputs(reference, b), attention_outputs(current, b)) for b in batches]
    )
    return drift_value(distances, reduction)
