"""Antidote (Huang et al., ICML 2025): after the attack, prune the fine-tuning adapter's weights that matter
most for harmful answers, scored on harmful data; no training, so the attack's learning rate and length do
not matter.

The score is Wanda's, ``|W_ij| * ||X_j||_2``: a weight's magnitude times the norm, over every non-padding
token of the harmful samples, of the input feature it multiplies. As in Antidote's scripts, the pruned
weights are the attack adapter's (LoRA's A and B of every adapted layer, each matrix pruning its own top
``ratio``, so no layer loses all of its adapter); the alignment adapter and the base weights stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from vaccine.data.context import DataContext
from vaccine.data.records import sample_of
from vaccine.data.resolve import load_records
from vaccine.lora import load_adapter
from vaccine.repairs.base import REPAIRS, RepairMethod, RepairRun
from vaccine.run_folders import adapter_dir, load_merged_model, save_adapter_atomically
from vaccine.settings import require, setting


def adapter_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every LoRA A and B matrix of the model's active adapter, by its weight's parameter name."""
    names = {module: name for name, module in model.named_modules()}
    linears: dict[str, nn.Linear] = {}
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for adapter in layer.active_adapters:
                for part in (layer.lora_A[adapter], layer.lora_B[adapter]):
                    linears[f"{names[part]}.weight"] = part
    return linears


@contextmanager
def input_norms(linears: dict[str, nn.Linear], mask: list[torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, each forward adds the squared input features of every linear, over the tokens where
    ``mask[0]`` (the current batch's attention mask) is 1; on exit the sums become L2 norms."""
    sums = {name: torch.zeros(linear.in_features) for name, linear in linears.items()}

    def accumulate(name: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            tokens = inputs[0].detach().float() * mask[0].unsqueeze(-1)
            sums[name] += tokens.pow(2).sum(dim=tuple(range(tokens.dim() - 1))).cpu()

        return hook

    handles = [linear.register_forward_pre_hook(accumulate(name)) for name, linear in linears.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()
        for name in sums:
            sums[name] = sums[name].sqrt()


@torch.no_grad()
def wanda_scores(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``|W_ij| * ||X_j||`` for every adapter matrix, the input norms taken over the batches' tokens."""
    linears = adapter_linears(model)
    device = next(model.parameters()).device
    model.eval()
    mask: list[torch.Tensor] = []
    with input_norms(linears, mask) as norms:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}  # a VLM's pixels too
            mask[:] = [inputs["attention_mask"].float()]
            model(**inputs)
    weights = {name: linear.weight.detach().abs().float().cpu() for name, linear in linears.items()}
    return {name: weight * norms[name] for name, weight in weights.items()}


@torch.no_grad()
def prune_top(model: nn.Module, scores: dict[str, torch.Tensor], ratio: float) -> int:
    """Zero, in each scored matrix, its ``floor(ratio * size)`` highest-scored weights; returns how many."""
    params = dict(model.named_parameters())
    pruned = 0
    for name, score in scores.items():
        count = int(ratio * score.numel())
        if count == 0:
            continue
        top = torch.topk(score.flatten(), count).indices
        params[name].view(-1)[top.to(params[name].device)] = 0
        pruned += count
    return pruned


@REPAIRS.register("antidote")
@dataclass(kw_only=True)
class Antidote(RepairMethod):
    """Prune the attack adapter's weights with the highest Wanda score on harmful data (one shot)."""

    ratio: float = setting(0.1, "share of each adapter matrix pruned (Antidote's scripts: 0.1)")
    harmful: str = setting("harmful-defense", "harmful data scored (disjoint from the attack's)")
    samples: int = setting(64, "harmful samples scored")

    def __post_init__(self) -> None:
        require(0.0 <= self.ratio < 1.0, "ratio", f"must be in [0, 1); got {self.ratio}")
        require(self.samples >= 1, "samples", f"must be >= 1; got {self.samples}")

    def repaired_adapters(self, attacked: list[Path], adapter: Path) -> list[Path]:
        return [*attacked[:-1], adapter]  # the pruned copy replaces the attack's adapter

    def repair(self, spec: RepairRun) -> dict[str, Any]:
        model, tokenizer = load_merged_model(
            spec.model, spec.attacked[:-1], dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
        )
        model = load_adapter(model, adapter_dir(spec.attacked[-1]))
        records = sample_of(load_records(self.harmful), self.samples, spec.seed, "samples", self.harmful)
        data = DataContext(tokenizer, spec.template, spec.max_length)
        scores = wanda_scores(model, data.loader(records, spec.batch_size, spec.seed))
        pruned = prune_top(model, scores, self.ratio)
        save_adapter_atomically(model, spec.out / "adapter")
        return {
            "pruned_weights": pruned,
            "adapter_weights": sum(score.numel() for score in scores.values()),
            "scored_samples": len(records),
        }
