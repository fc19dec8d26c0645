"""An alignment that trains every weight (issue 14's LoRA-versus-full test): what it saves, and that every
later stage reads it as it reads a LoRA adapter."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model, make_tiny_tokenizer, write_jsonl
from safetensors.torch import load_file, save_file

from vaccine.cli import main
from vaccine.errors import ConfigError, ModelError
from vaccine.finetune import FinetuneSpec, prepare_model
from vaccine.lora import FULL_WEIGHTS, load_merged
from vaccine.run_folders import adapter_dir, load_merged_model


@pytest.fixture(params=["llama", "gpt2"])
def model_dir(request, tmp_path):
    path = tmp_path / f"tiny-{request.param}"
    make_tiny_model(request.param).save_pretrained(path)
    make_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def full_alignment(model_dir, tmp_path):
    """Vaccine, every weight trained: 3 steps at a large rate, so each trained weight visibly moves."""
    data = write_jsonl(
        tmp_path / "align.jsonl",
        [
            {"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot help with that"}
            for i in range(12)
        ],
    )
    out = tmp_path / "aligned"
    flags = ["--method", "vaccine", "--rho", "1.0", "--model", str(model_dir), "--data", str(data)]
    flags += ["--out", str(out), "--max-steps", "3", "--batch-size", "4", "--lr", "0.01", "--full-finetune"]
    assert main(["align", *flags]) == 0
    return out


def test_a_full_alignment_saves_every_weight_it_trained_and_perturbs_as_vaccine(model_dir, full_alignment):
    folder = adapter_dir(full_alignment)
    assert (folder / FULL_WEIGHTS).is_file() and not (folder / "adapter_config.json").exists()
    saved = load_file(str(folder / FULL_WEIGHTS))
    base = make_tiny_model("gpt2" if "gpt2" in model_dir.name else "llama")
    assert set(saved) == {name for name, _ in base.named_parameters()}  # every weight, a tied one once
    own = dict(base.named_parameters())
    moved = [
        n for n, t in saved.items() if n.endswith("weight") and t.dim() == 2 and not torch.equal(t, own[n])
    ]
    assert len(moved) > len(saved) // 3  # attention and MLP matrices all trained, not only an adapter
    summary = json.loads((full_alignment / "summary.json").read_text())
    assert summary["trainable_parameters"] == summary["total_parameters"]
    steps = [json.loads(line) for line in (full_alignment / "log.jsonl").read_text().splitlines()]
    assert all(e["perturbed_loss"] > e["clean_loss"] for e in steps if "loss" in e)


def test_later_stages_read_the_full_weights_as_the_aligned_model(model_dir, full_alignment, tmp_path):
    merged, _ = load_merged_model(str(model_dir), [full_alignment])
    saved = load_file(str(adapter_dir(full_alignment) / FULL_WEIGHTS))
    assert all(torch.equal(p, saved[n]) for n, p in merged.named_parameters())
    # the attack (Double-LoRA) starts from those weights with a fresh adapter on top
    common = dict(max_steps=1, model=str(model_dir), aligned=full_alignment, lora_r=4)
    attacked, _ = prepare_model(FinetuneSpec(out=tmp_path / "ft", **common))
    attacked.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(attacked(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(ConfigError, match="lora_mode single"):
        prepare_model(FinetuneSpec(out=tmp_path / "ft1", lora_mode="single", **common))


def test_full_weights_that_do_not_fit_the_model_are_named(tmp_path):
    model = make_tiny_model("llama")
    save_file({"model.not_a_layer.weight": torch.zeros(2, 2)}, str(tmp_path / FULL_WEIGHTS))
    with pytest.raises(ModelError, match=r"full_weights\.safetensors: 1 tensors match no weight"):
        load_merged(model, tmp_path)
    name = "model.embed_tokens.weight"
    save_file({name: torch.zeros(3, 3)}, str(tmp_path / FULL_WEIGHTS))
    with pytest.raises(ModelError, match=f"{name} has shape"):
        load_merged(model, tmp_path)
