"""LoRA over several architectures: targets, trainability, save/load and merge must preserve outputs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ARCHS, make_tiny_model
from peft import PeftModel
from safetensors.torch import load_file

from vaccine.errors import ConfigError, ModelError
from vaccine.lora import (
    FULL_WEIGHTS,
    LoraSettings,
    attach_lora,
    count_parameters,
    load_adapter,
    merge_lora,
    read_adapter_config,
    resolve_target_modules,
    save_adapter,
)

IDS = torch.tensor([[1, 5, 9, 17, 33, 2]])

EXPECTED_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def _nonzero_lora_b(model: PeftModel, seed: int = 1) -> None:
    """A fresh adapter is a no-op (B=0); make it change outputs so equality tests mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_defaults_match_official_vaccine() -> None:
    s = LoraSettings()
    assert (s.r, s.alpha, s.dropout, s.target_modules) == (8, 4, 0.1, None)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"r": 0}, "r"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"alpha": 0}, "alpha"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_settings_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        LoraSettings(**kwargs)


@pytest.mark.parametrize("arch", sorted(EXPECTED_TARGETS))
def test_auto_targets(arch: str) -> None:
    assert resolve_target_modules(make_tiny_model(arch), LoraSettings()) == EXPECTED_TARGETS[arch]


def test_explicit_missing_target_is_config_error(tiny_llama) -> None:
    with pytest.raises(ConfigError, match="c_attn"):
        resolve_target_modules(tiny_llama, LoraSettings(target_modules=["q_proj", "c_attn"]))


@pytest.mark.parametrize("arch", ARCHS)
def test_attach_trains_only_lora(arch: str) -> None:
    model = attach_lora(make_tiny_model(arch))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    n_trainable, total = count_parameters(model)
    assert 0 < n_trainable < total
    with pytest.raises(ModelError, match="already"):
        attach_lora(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_roundtrip_and_merge(arch: str, tmp_path) -> None:
    model = attach_lora(make_tiny_model(arch))
    _nonzero_lora_b(model)
    expected = _logits(model)
    assert not torch.allclose(expected, _logits(make_tiny_model(arch)))  # the adapter does something

    save_adapter(model, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert read_adapter_config(tmp_path)["r"] == 8
    loaded = load_adapter(make_tiny_model(arch), tmp_path)
    assert torch.allclose(_logits(loaded), expected, atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = load_adapter(make_tiny_model(arch), tmp_path, trainable=True)
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_" in n)

    merged = merge_lora(loaded)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged), expected, atol=1e-5)


def test_bad_adapter_config_names_file(tmp_path, tiny_llama) -> None:
    with pytest.raises(ModelError, match="adapter_config.json"):
        load_adapter(tiny_llama, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="adapter_config.json.*not valid JSON"):
        load_adapter(tiny_llama, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ModelError, match="adapter_config.json.*LORA"):
        load_adapter(tiny_llama, tmp_path)


def test_merge_needs_an_adapter_and_a_plain_model_saves_its_trained_weights(tiny_llama, tmp_path) -> None:
    with pytest.raises(ModelError):
        merge_lora(tiny_llama)
    save_adapter(tiny_llama, tmp_path / "full")  # a full fine-tune: every trainable weight
    assert (tmp_path / "full" / FULL_WEIGHTS).is_file() and not (
        tmp_path / "full" / "adapter_config.json"
    ).exists()
    tiny_llama.requires_grad_(False)
    with pytest.raises(ModelError, match="nothing to save"):
        save_adapter(tiny_llama, tmp_path / "frozen")


def test_pickle_adapter_is_refused_with_an_explanation(tmp_path, tiny_llama) -> None:
    save_adapter(attach_lora(make_tiny_model("llama"), LoraSettings(r=4)), tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    torch.save(weights, tmp_path / "adapter_model.bin")
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"pickle file \(adapter_model.bin\).*safetensors only"):
        load_adapter(tiny_llama, tmp_path)
