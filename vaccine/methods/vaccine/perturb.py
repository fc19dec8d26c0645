"""Vaccine's perturbation: find each layer's attention output, take its gradient, add the worst-case eps.

The official code hard-codes ``LlamaAttention``/``OPTAttention`` and the deprecated
``register_backward_hook``. Here the attention blocks are found by structure (the decoder-layer list and,
inside each layer, the child that holds the attention projections), gradients come from
``torch.autograd.grad`` on captured outputs (no parameter ``.grad`` is touched), and every hook lives only
inside a context manager, so the model is never left modified.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from vaccine.answer_loss import causal_lm_loss
from vaccine.errors import ConfigError
from vaccine.vision.structure import is_inside, language_model_prefix

NormScope = Literal["batch", "sample"]
_ATTENTION_NAME = re.compile(r"(^|_)(self_)?(attn|attention)$")


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of decoder blocks, found by structure rather than by class name.

    Every Hugging Face decoder keeps its blocks in one ``nn.ModuleList`` (``model.layers``, ``transformer.h``,
    ``model.decoder.layers``, ``gpt_neox.layers`` ...) whose blocks each own an attention child. Other
    lists (MoE experts) fail that test; among the rest the longest list wins. In a vision-language model
    the vision tower's blocks pass the test too, and may be the longer list, so only lists inside the
    language model count (:func:`~vaccine.vision.structure.language_model_prefix`).
    """
    language_model = language_model_prefix(model)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if language_model is not None and not is_inside(name, language_model):
            continue
        if len({type(block) for block in module}) != 1 or _attention_child(module[0]) is None:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise ConfigError(
            f"could not find decoder layers with attention in {type(model).__name__}; "
            "pass perturb_modules=<regex> to choose the modules to perturb"
        )
    return best


def _has_linear(module: nn.Module) -> bool:
    """Attention blocks own projections; norms and dropouts named '*attention*' do not."""
    return any(
        isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D" for m in module.modules() if m is not module
    )


def _attention_child(layer: nn.Module) -> tuple[str, nn.Module] | None:
    for name, child in layer.named_children():
        if _ATTENTION_NAME.search(name) and _has_linear(child):
            return name, child
    return None


def find_attention_modules(model: nn.Module, pattern: str | None = None) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs Vaccine perturbs, in depth order.

    By default, the self-attention block of every decoder layer (the paper's choice: its output before
    the residual add). ``pattern`` is a regex matched against full module names (like PEFT's
    ``target_modules``) for users who want other layers, e.g. ``r".*layers\\.(1[0-9])\\.self_attn$"``.
    """
    if pattern is not None:
        regex = re.compile(pattern)
        found = [(n, m) for n, m in model.named_modules() if n and regex.fullmatch(n)]
        if not found:
            raise ConfigError(f"--perturb-modules {pattern!r} matches no module of {type(model).__name__}")
        return found
    prefix, layers = find_decoder_layers(model)
    found = []
    for index, layer in enumerate(layers):
        child = _attention_child(layer)
        if child is None:
            raise ConfigError(
                f"decoder layer {prefix}.{index} ({type(layer).__name__}) has no attention child; "
                "pass perturb_modules=<regex> to choose the modules to perturb"
            )
        found.append((f"{prefix}.{index}.{child[0]}", child[1]))
    return found


def _first(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: torch.Tensor | tuple, tensor: torch.Tensor) -> torch.Tensor | tuple:
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


@contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Record each module's (first) output tensor during the forward passes run inside the block."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        captured.append(_first(output))

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_perturbation(modules: Sequence[nn.Module], eps: Sequence[torch.Tensor]) -> Iterator[None]:
    """Add the constant ``eps[i]`` to module i's output in every forward pass run inside the block."""
    if len(eps) != len(modules):
        raise ValueError(f"got {len(eps)} perturbations for {len(modules)} modules")

    def make_hook(delta: torch.Tensor):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor | tuple):
            hidden = _first(output)
            return _replace_first(output, hidden + delta.to(hidden.dtype))

        return hook

    handles = [m.register_forward_hook(make_hook(e.detach())) for m, e in zip(modules, eps, strict=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def squared_norm(grads: Sequence[torch.Tensor], scope: NormScope = "batch") -> torch.Tensor:
    """Sum of squares over all layers and tokens: a scalar for "batch", one per sample for "sample"."""
    if scope == "batch":
        return sum(g.float().pow(2).sum() for g in grads)
    return sum(g.float().pow(2).flatten(1).sum(1) for g in grads)


def perturbation_from_grads(
    grads: Sequence[torch.Tensor],
    rho: float,
    attention_mask: torch.Tensor | None = None,
    scope: NormScope = "batch",
    total_squared_norm: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """eps_l = rho * g_l / ||(g_1..g_L)||, one norm over every layer, padding positions excluded.

    ``scope='batch'`` is the paper's rule (rho is the budget of the whole batch). ``'sample'`` gives each
    sample its own norm rho, so a sample's eps does not depend on what it is batched with.
    ``total_squared_norm`` lets the caller pass a norm computed over more than these grads (all
    micro-batches of an accumulation step, or all ranks).
    """
    if attention_mask is not None:
        keep = attention_mask.unsqueeze(-1).to(grads[0].dtype)
        grads = [g * keep for g in grads]
    if total_squared_norm is None:
        total_squared_norm = squared_norm(grads, scope)
    scale = rho / (total_squared_norm.sqrt() + 1e-12)
    if scope == "sample":
        scale = scale.view(-1, 1, 1)
    return [(g.float() * scale).to(g.dtype).detach() for g in grads]


def draw_layers(importance: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """T-Vaccine's choice: ``k`` distinct layer indices, each drawn with probability proportional to its
    ``importance`` (a harmful-gradient norm per layer), in layer order. A layer of importance 0 is never drawn
    while others remain; all zero (nothing measured) falls back to a uniform draw."""
    weights = importance.detach().double().clamp_min(0)
    if weights.sum() <= 0:
        weights = torch.ones_like(weights)
    positive = int((weights > 0).sum())
    if positive < k:  # multinomial without replacement needs k positive weights: pad with the rest uniformly
        weights = torch.where(weights > 0, weights, weights[weights > 0].min() * 1e-9)
    return sorted(torch.multinomial(weights, k, replacement=False, generator=generator).tolist())


def layer_gradient_norms(
    model: nn.Module, modules: Sequence[nn.Module], batches: Sequence[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Per module, the norm of the loss gradient with respect to its output over ``batches`` (T-Vaccine's
    measure of how much a layer carries the harmful behaviour); parameters' ``.grad`` are untouched."""
    squared = torch.zeros(len(modules), dtype=torch.float64)
    for batch in batches:
        with capture_outputs(modules) as outputs:
            loss = causal_lm_loss(model, batch)
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
        squared += torch.tensor([0.0 if g is None else float(g.double().pow(2).sum()) for g in grads])
    return squared.sqrt()
