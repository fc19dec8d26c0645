"""The perturbation maths and the structural layer discovery, on tiny random decoders of every family."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_tiny_model

from vaccine.errors import ConfigError
from vaccine.methods.vaccine.perturb import (
    add_perturbation,
    capture_outputs,
    find_attention_modules,
    perturbation_from_grads,
    squared_norm,
)


def batch(seed: int = 0, size: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 120, (size, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def clean_grads(model, inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    modules = [m for _, m in find_attention_modules(model)]
    with capture_outputs(modules) as outputs:
        loss = model(**inputs).loss
        grads = torch.autograd.grad(loss, outputs)
    return loss.detach(), list(grads)


def perturbed_loss(model, inputs, eps) -> torch.Tensor:
    modules = [m for _, m in find_attention_modules(model)]
    with torch.no_grad(), add_perturbation(modules, eps):
        return model(**inputs).loss


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_finds_one_attention_block_per_layer_and_eps_raises_loss(arch):
    model = make_tiny_model(arch)
    found = find_attention_modules(model)
    assert len(found) == model.config.num_hidden_layers
    assert all(any(isinstance(p, torch.nn.Parameter) for p in m.parameters()) for _, m in found)
    inputs = batch()
    loss, grads = clean_grads(model, inputs)
    eps = perturbation_from_grads(grads, rho=0.5, attention_mask=inputs["attention_mask"])
    assert perturbed_loss(model, inputs, eps) > loss


def test_eps_has_total_norm_rho_over_all_layers():
    model = make_tiny_model("llama")
    _, grads = clean_grads(model, batch())
    for rho in (0.01, 2.0, 10.0):
        eps = perturbation_from_grads(grads, rho=rho)
        assert squared_norm(eps).sqrt().item() == pytest.approx(rho, rel=1e-5)
        # direction is the gradient's (ascent), per layer
        cos = torch.nn.functional.cosine_similarity(eps[0].flatten(), grads[0].flatten(), dim=0)
        assert cos.item() == pytest.approx(1.0, abs=1e-5)


def test_sample_scope_gives_each_sample_norm_rho():
    model = make_tiny_model("qwen2")
    _, grads = clean_grads(model, batch(size=4))
    eps = perturbation_from_grads(grads, rho=2.0, scope="sample")
    assert torch.allclose(squared_norm(eps, "sample").sqrt(), torch.full((4,), 2.0), rtol=1e-5)


def test_small_eps_raises_loss_by_its_first_order_term():
    model = make_tiny_model("llama")
    inputs = batch()
    loss, grads = clean_grads(model, inputs)
    rho = 1e-3
    eps = perturbation_from_grads(grads, rho=rho)
    predicted = rho * squared_norm(grads).sqrt()  # <g, rho g/||g||>
    assert (perturbed_loss(model, inputs, eps) - loss).item() == pytest.approx(predicted.item(), rel=0.05)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_padding_does_not_change_a_samples_eps(arch):
    model = make_tiny_model(arch)
    alone = batch(size=1, length=10)
    padded = {k: torch.nn.functional.pad(v, (0, 6), value=0) for k, v in alone.items()}
    padded["labels"][:, 10:] = -100
    _, g_alone = clean_grads(model, alone)
    _, g_padded = clean_grads(model, padded)
    eps_alone = perturbation_from_grads(g_alone, 2.0, alone["attention_mask"])
    eps_padded = perturbation_from_grads(g_padded, 2.0, padded["attention_mask"])
    for a, p in zip(eps_alone, eps_padded, strict=True):
        assert torch.allclose(a, p[:, :10], atol=1e-5)
        assert p[:, 10:].abs().max() == 0


def test_sample_scope_eps_ignores_batch_mates():
    model = make_tiny_model("mistral")
    a, b = batch(seed=1, size=1), batch(seed=2, size=1)
    together = {k: torch.cat([a[k], b[k]]) for k in a}
    _, g_a = clean_grads(model, a)
    _, g_ab = clean_grads(model, together)
    # mean-reduced losses differ in scale by the batch size; a per-sample norm removes that too
    eps_a = perturbation_from_grads(g_a, 1.0, scope="sample")
    eps_ab = perturbation_from_grads(g_ab, 1.0, scope="sample")
    for x, y in zip(eps_a, eps_ab, strict=True):
        assert torch.allclose(x[0], y[0], atol=1e-5)


def test_hooks_are_removed_and_zero_eps_is_identity():
    model = make_tiny_model("opt")
    inputs = batch()
    modules = [m for _, m in find_attention_modules(model)]
    with torch.no_grad():
        reference = model(**inputs).logits
        with capture_outputs(modules) as outputs:
            model(**inputs)
        zeros = [torch.zeros_like(o) for o in outputs]
        with add_perturbation(modules, zeros):
            same = model(**inputs).logits
    assert torch.equal(reference, same)
    assert all(not m._forward_hooks for m in modules)


def test_regex_selects_modules_and_a_bad_regex_names_itself():
    model = make_tiny_model("llama")
    found = find_attention_modules(model, r"model\.layers\.1\.self_attn")
    assert [n for n, _ in found] == ["model.layers.1.self_attn"]
    with pytest.raises(ConfigError, match="nothing_here"):
        find_attention_modules(model, "nothing_here")
