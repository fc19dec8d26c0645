"""Harmful embedding drift (the paper's diagnosis) and the alignment loss, on a fixed alignment sample.

Drift compares each decoder layer's attention output (the same modules Vaccine perturbs) of a reference
model, the aligned model before fine-tuning, with those of the current model. Default: the mean over samples
and layers of the L2 distance over a sample's real tokens (padding excluded, so the number does not depend
on batching); ``reduction="sum_sq"`` is the official code's squared-Frobenius sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from vaccine.methods.vaccine.perturb import capture_outputs, find_attention_modules

Reduction = Literal["mean_l2", "sum_sq"]


@dataclass
class Probe:
    """One pass of a model over the alignment sample: every layer's attention output per batch (padding
    zeroed) and the token-weighted alignment loss. One forward serves both, so drift costs no extra pass."""

    outputs: list[list[torch.Tensor]]
    loss: float


@torch.no_grad()
def probe(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Probe:
    """Run ``model`` (eval mode, no gradients) over ``batches``, which carry ``labels``."""
    modules = [m for _, m in find_attention_modules(model)]
    was_training = model.training
    model.eval()
    outputs, total, tokens = [], 0.0, 0
    for batch in batches:
        with capture_outputs(modules) as captured:
            loss = model(**batch).loss
        keep = batch["attention_mask"].unsqueeze(-1).float()
        outputs.append([o.float() * keep for o in captured])
        count = int((batch["labels"][:, 1:] != -100).sum())
        total += loss.item() * count
        tokens += count
    model.train(was_training)
    return Probe(outputs, total / max(tokens, 1))


def layer_distances(reference: list[torch.Tensor], current: list[torch.Tensor]) -> torch.Tensor:
    """(samples, layers) L2 distances; padded positions are zero in both, so they add nothing."""
    return torch.stack([(c - r).flatten(1).norm(dim=1) for r, c in zip(reference, current, strict=True)], 1)


def all_distances(reference: Probe, current: Probe) -> torch.Tensor:
    """(samples, layers) distances over every batch of two probes of the same sample."""
    pairs = zip(reference.outputs, current.outputs, strict=True)
    return torch.cat([layer_distances(r, c) for r, c in pairs])


def drift_value(distances: torch.Tensor, reduction: Reduction = "mean_l2") -> float:
    if reduction == "mean_l2":
        return distances.mean().item()
    return distances.pow(2).sum().item()


def alignment_loss(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """Token-weighted mean loss of ``model`` on the alignment sample (how much of the alignment is left)."""
    return probe(model, batches).loss


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
        self._reference: Probe | None = None

    def _probe(self, model: torch.nn.Module) -> Probe:
        device = next(model.parameters()).device
        return probe(model, [_to(b, device) for b in self.batches])

    def _measure(self, model: torch.nn.Module, state: Any) -> None:
        step = state.global_step
        current = self._probe(model)
        distances = all_distances(self._reference, current)
        row = {
            "step": step,
            "alignment_loss": current.loss,
            "drift": drift_value(distances),
            "drift_sum_sq": drift_value(distances, "sum_sq"),
        }
        self.history.append(row)
        # under DDP, rank 0 writes the file (a state without ranks counts as rank 0)
        if self.path is not None and getattr(state, "is_world_process_zero", True):
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def set_reference(self, model: torch.nn.Module) -> None:
        """Record the reference outputs; call it before a resumed run loads its checkpoint."""
        self._reference = self._probe(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._reference is None:
            self.set_reference(model)
        if state.global_step == 0:
            self._measure(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            self._measure(model, state)


def embedding_drift(
    reference: torch.nn.Module,
    current: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    reduction: Reduction = "mean_l2",
) -> float:
    """Drift between a reference (aligned) model and a current (fine-tuned) one on ``batches``."""
    batches = list(batches)
    return drift_value(all_distances(probe(reference, batches), probe(current, batches)), reduction)


def drift_and_losses(
    reference: torch.nn.Module, current: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Both drift reductions and both models' alignment losses, from one pass of each model."""
    batches = list(batches)
    before, after = probe(reference, batches), probe(current, batches)
    distances = all_distances(before, after)
    return {
        "embedding_drift": drift_value(distances),
        "embedding_drift_sum_sq": drift_value(distances, "sum_sq"),
        "alignment_loss": after.loss,
        "reference_alignment_loss": before.loss,
    }
