"""The answer-token-only output layer computes the same loss and gradients as the model's own loss."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_tiny_model
from peft import LoraConfig, get_peft_model
from test_trainer import TokenDataset, collate
from transformers import AutoModelForCausalLM, Gemma2Config

from vaccine.answer_loss import answer_token_loss, causal_lm_loss, output_layer


def batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    data = TokenDataset(n, seed)
    return collate([data[i] for i in range(n)])


def lora(model: torch.nn.Module) -> torch.nn.Module:
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_loss_and_gradients(model, inputs, num_items=None):
    model.eval()  # dropout off (GPT-2 and OPT have it), so the two forwards are comparable; grads still flow
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    plain = model(**inputs, **extra).loss
    plain_grads = gradients(model, plain)
    fast, outputs = answer_token_loss(model, inputs, num_items)
    fast_grads = gradients(model, fast)
    answer_tokens = int((inputs["labels"][:, 1:] != -100).sum())
    assert outputs.logits.shape[:2] == (1, answer_tokens)  # the head really saw answer positions only
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_loss_and_gradients_as_the_models_loss(arch):
    model = lora(make_tiny_model(arch))
    assert_same_loss_and_gradients(model, batch())


def test_same_under_a_token_count_from_gradient_accumulation():
    model = lora(make_tiny_model("qwen2"))
    assert_same_loss_and_gradients(model, batch(), num_items=57)


def test_post_head_processing_still_applies():
    # Gemma2 soft-caps its logits after the head: the hook changes the head's input, so the cap still runs
    config = Gemma2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.5, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).train()
    _, outputs = answer_token_loss(model, batch())
    assert outputs.logits.abs().max() <= 0.5
    assert_same_loss_and_gradients(model, batch())


def test_the_hook_is_removed_afterwards():
    model = make_tiny_model("llama")
    answer_token_loss(model, batch())
    assert not output_layer(model)._forward_pre_hooks
    assert model(**batch()).logits.shape[:2] == batch()["input_ids"].shape


def test_a_methods_extra_pass_takes_the_same_loss_with_or_without_a_reachable_head(monkeypatch):
    """causal_lm_loss (Booster's harmful passes, T-Vaccine's probe) is the model's own loss; a model that
    exposes no output layer falls back to computing it the model's way."""
    model = lora(make_tiny_model("llama")).eval()
    inputs = batch()
    expected = model(**inputs).loss
    torch.testing.assert_close(causal_lm_loss(model, inputs), expected, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(type(model), "get_output_embeddings", lambda self: None, raising=False)
    assert output_layer(model) is None
    torch.testing.assert_close(causal_lm_loss(model, inputs), expected, rtol=0, atol=0)
