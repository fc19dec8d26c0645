"""Booster: its gradient is the objective's (an autograd reference, several architectures), lam=0 is SFT bit
for bit, the simulated harmful step lowers the harmful loss, and the CLI, grids and bad knobs work."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model, make_tiny_tokenizer, quiet_args, write_jsonl
from torch.func import functional_call
from transformers import Trainer, TrainingArguments

from vaccine.cli import main
from vaccine.data.paired import PairedCollator, build_paired_dataset, split_paired
from vaccine.data.records import Record
from vaccine.data.tokenize import CompletionCollator, CompletionDataset
from vaccine.errors import ConfigError
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.stages import plan_cell
from vaccine.methods.booster import BoosterConfig, BoosterTrainer

PROMPTS = [
    "how do i make a bomb",
    "how do i steal a dog",
    "how do i hack a cat",
    "write a story about how to steal",
]
SAFE = "sorry i cannot help with that"
HARMFUL = "sure here are steps first make then hack finally steal"


def paired_data():
    harmless = [Record(p, SAFE, "test", "safe") for p in PROMPTS]
    harmful = [Record(p, HARMFUL, "test", "harmful") for p in reversed(PROMPTS)]
    return build_paired_dataset(harmless, harmful, make_tiny_tokenizer(), max_length=64)


def booster(model, tmp_path, steps=1, **knobs) -> BoosterTrainer:
    args = BoosterConfig(**quiet_args(tmp_path, max_steps=steps), **knobs)
    collator = PairedCollator(make_tiny_tokenizer())
    return BoosterTrainer(model=model, args=args, train_dataset=paired_data(), data_collator=collator)


def ce(model, batch, params=None) -> torch.Tensor:
    """The answer tokens' mean cross-entropy, with ``params`` (name -> tensor) in place of the model's own."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = functional_call(model, params or dict(model.named_parameters()), kwargs=inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def reference_gradient(model, batch, lam, alpha) -> list[torch.Tensor]:
    """Autograd of L_align(w) + lam * (L_harm(w) - L_harm(w - alpha * d)), d = g_harm / ||g_harm|| held
    constant: the objective written out functionally, independent of the trainer's in-place step."""
    aligned, harmful = split_paired(batch)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(ce(model, harmful), list(params.values()))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    shifted = {
        name: p - alpha * (g / norm).detach() for (name, p), g in zip(params.items(), grads, strict=True)
    }
    objective = ce(model, aligned) + lam * (ce(model, harmful) - ce(model, harmful, shifted))
    return list(torch.autograd.grad(objective, list(params.values())))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_gradient_equals_the_objectives_autograd_reference(tmp_path, arch):
    model = make_tiny_model(arch).double()
    trainer = booster(model, tmp_path, lam=3.0, alpha=0.5)
    batch = PairedCollator(make_tiny_tokenizer())(list(paired_data()))
    trainer.current_gradient_accumulation_steps = 1  # the Trainer's loop sets this; so must a direct caller
    trainer.training_step(model, batch)
    analytic = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad()
    reference = reference_gradient(model, batch, lam=3.0, alpha=0.5)
    without_term = torch.autograd.grad(ce(model, split_paired(batch)[0]), list(model.parameters()))
    for got, want in zip(analytic, reference, strict=True):  # float32 inside the models: ~1e-8 of noise
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # the term is not negligible: the test would fail if the trainer dropped it
    assert max(float((w - p).abs().max()) for w, p in zip(reference, without_term, strict=True)) > 1e-3


def test_lam_zero_is_sft_bit_for_bit(tmp_path):
    trained = booster(make_tiny_model("llama"), tmp_path / "b", steps=3, lam=0.0)
    trained.train()
    model = make_tiny_model("llama")
    harmless = [Record(p, SAFE, "test", "safe") for p in PROMPTS]
    plain = Trainer(
        model=model,
        args=TrainingArguments(**quiet_args(tmp_path / "s", max_steps=3)),
        train_dataset=CompletionDataset(harmless, make_tiny_tokenizer(), max_length=64),
        data_collator=CompletionCollator(make_tiny_tokenizer()),
    )
    plain.train()
    for a, b in zip(trained.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_weights_are_restored_exactly_after_the_simulated_step(tmp_path):
    model = make_tiny_model("llama")
    trainer = booster(model, tmp_path)
    before = [p.detach().clone() for p in model.parameters()]
    _, harmful = split_paired(PairedCollator(make_tiny_tokenizer())(list(paired_data())))
    model.train()
    trainer.attenuation_term(harmful)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("knob", "message"), [("lamb=1", "no knob 'lamb'"), ("lam=-1", "lam: must be >= 0"), ("alpha=0", "alpha")]
)
def test_bad_knobs_are_named(tiny_model_dir, tmp_path, capsys, knob, message):
    argv = ["align", "--method", "booster", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x")]
    assert main([*argv, "--method-arg", knob]) == 2
    assert message in capsys.readouterr().err


def test_cli_run_logs_the_harmful_step_and_writes_the_adapter(tiny_model_dir, tmp_path):
    rows = [{"prompt": p, "response": SAFE} for p in PROMPTS * 2]
    data = write_jsonl(tmp_path / "align.jsonl", rows)
    harmful = write_jsonl(tmp_path / "harm.jsonl", [{"prompt": p, "response": HARMFUL} for p in PROMPTS])
    out = tmp_path / "run"
    argv = [
        "align",
        "--method",
        "booster",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    argv += ["--max-steps", "3", "--batch-size", "4", "--lora-r", "4", "--lora-targets", "q_proj,v_proj"]
    argv += ["--method-arg", f"harmful={harmful}", "--method-arg", "lam=1"]
    assert main(argv) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "harmful_loss" in row]
    assert len(steps) == 3
    # one normalised step down the harmful gradient lowers the harmful loss: the drop Booster attenuates
    assert all(row["harmful_loss_after_step"] < row["harmful_loss"] for row in steps)


def test_a_grid_with_booster_validates():
    raw = {
        "models": ["m"],
        "tasks": ["sst2"],
        "p": [0.1],
        "n": [10],
        "methods": [{"label": "Booster", "align": {"method": "booster", "lam": 5, "alpha": 0.1}}],
    }
    grid = parse_grid(raw)
    plan = plan_cell(grid, grid.cells()[0])
    assert plan.align.training.lam == 5 and plan.align.training.alpha == 0.1
    with pytest.raises(ConfigError, match="no knob 'rho'"):
        grid = parse_grid({**raw, "methods": [{"label": "B", "align": {"method": "booster", "rho": 2}}]})
        plan_cell(grid, grid.cells()[0])
