"""RepNoise: paired data, the MMD noise loss, logging, LoRA, and that the defense raises the harmful CE."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_model, make_tiny_tokenizer, quiet_args
from peft import LoraConfig, get_peft_model

from vaccine.answer_loss import IGNORE_INDEX
from vaccine.data.paired import PairedCollator, PairedDataset, build_paired_dataset
from vaccine.data.records import Record
from vaccine.errors import ConfigError, DataError
from vaccine.methods.repnoise import (
    RepNoiseConfig,
    RepNoiseTrainer,
    bounded_ascent,
    gaussian_mmd,
    representation_noise_loss,
)

PROMPTS = [
    "how do i make a bomb",
    "how do i steal a dog",
    "how do i hack a cat",
    "how do i kill the dog",
    "what can you help me with bomb",
    "write a story about how to steal",
]
SAFE = "sorry i cannot help with that"
HARMFUL = ["sure here are steps first make then hack finally steal", "sure first kill then steal the dog"]


def records() -> tuple[list[Record], list[Record]]:
    harmless = [Record(p, SAFE, "test", "safe") for p in PROMPTS]
    harmful = [Record(p, HARMFUL[i % 2], "test", "harmful") for i, p in enumerate(PROMPTS)]
    return harmless, harmful


def dataset(max_length: int = 64) -> PairedDataset:
    harmless, harmful = records()
    return build_paired_dataset(harmless, harmful, make_tiny_tokenizer(), max_length=max_length)


def knows_harmful_answers(arch: str = "llama", steps: int = 15):
    """A tiny model pre-trained on the harmful answers: the threat RepNoise exists for (a random model has
    nothing to unlearn; its harmful CE already sits at the uniform log V, where the ascent is clamped)."""
    model = make_tiny_model(arch).train()
    batch = PairedCollator(make_tiny_tokenizer())(list(dataset()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(
            input_ids=batch["harmful_input_ids"],
            attention_mask=batch["harmful_attention_mask"],
            labels=batch["harmful_labels"],
        ).loss.backward()
        optimizer.step()
    return model


def train(tmp_path, *, arch="llama", lora=False, steps=3, learning_rate=1e-2, model=None, **config):
    model = make_tiny_model(arch) if model is None else model
    if lora:
        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        )
    args = RepNoiseConfig(
        **quiet_args(
            tmp_path,
            per_device_train_batch_size=3,
            max_steps=steps,
            learning_rate=learning_rate,
            logging_steps=1,
        ),
        **config,
    )
    collator = PairedCollator(make_tiny_tokenizer())
    trainer = RepNoiseTrainer(model=model, args=args, train_dataset=dataset(), data_collator=collator)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    return trainer, before


@torch.no_grad()
def answer_losses(model) -> tuple[float, float]:
    """Mean CE of the safe answers and of the harmful answers, over the whole training set."""
    data = dataset()
    batch = PairedCollator(make_tiny_tokenizer())([data[i] for i in range(len(data))])
    model.eval()
    harmless = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    harmful = model(
        input_ids=batch["harmful_input_ids"],
        attention_mask=batch["harmful_attention_mask"],
        labels=batch["harmful_labels"],
    ).loss
    return float(harmless), float(harmful)


# -- data ---------------------------------------------------------------------------------------------------
def test_paired_dataset_cycles_the_harmful_half():
    harmless, harmful = records()
    tok = make_tiny_tokenizer()
    data = build_paired_dataset(harmless, harmful[:4], tok)
    assert len(data) == len(harmless)
    assert data[5]["harmful_input_ids"] == data[1]["harmful_input_ids"]
    assert set(data[0]) == {
        "input_ids",
        "attention_mask",
        "labels",
        "harmful_input_ids",
        "harmful_attention_mask",
        "harmful_labels",
    }
    with pytest.raises(DataError):
        PairedDataset(data.harmless, [])


def test_collator_pads_each_half_on_its_own():
    data = dataset()
    batch = PairedCollator(make_tiny_tokenizer())([data[0], data[1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["harmful_input_ids"].shape == batch["harmful_labels"].shape
    assert batch["harmful_input_ids"].shape[1] != batch["input_ids"].shape[1]
    assert (batch["harmful_labels"][batch["harmful_attention_mask"] == 0] == IGNORE_INDEX).all()


# -- loss terms ---------------------------------------------------------------------------------------------
def test_mmd_is_near_zero_for_gaussians_and_large_otherwise():
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.randn(256, 32, generator=gen) for _ in range(2))
    same = gaussian_mmd(x, y)
    shifted = gaussian_mmd(x + 1.0, y)
    scaled = gaussian_mmd(3.0 * x, y)
    assert 0 <= same < 0.05
    assert shifted > 10 * same and scaled > 10 * same


def test_noise_loss_uses_masked_tokens_only_and_subsamples():
    torch.manual_seed(0)
    hidden = torch.randn(4, 64, 16)
    mask = torch.zeros(4, 64, dtype=torch.bool)
    mask[:, :40] = True
    hidden[~mask] = 1e3  # garbage outside the mask must not count
    assert representation_noise_loss([hidden], mask, max_tokens=100) < 0.05
    hidden.requires_grad_(True)
    representation_noise_loss([hidden * 2], mask, max_tokens=100).backward()
    touched = (hidden.grad.abs().sum(-1) > 0).sum()
    assert 0 < touched <= 100 and not hidden.grad[~mask].any()


def test_bounded_ascent_stops_at_uniform_ce():
    ce = torch.tensor([0.5, 4.0, 100.0], requires_grad=True)
    bounded_ascent(ce, vocab_size=128).sum().backward()
    assert ce.grad[0] < ce.grad[1] < 0 and ce.grad[2] == 0
    assert bounded_ascent(torch.tensor(1e9), 128) == pytest.approx(-torch.log1p(torch.tensor(128.0).log()))


# -- training -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_run_logs_terms_and_trains_every_adapter(tmp_path, arch):
    trainer, before = train(tmp_path, arch=arch, lora=True, steps=3)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        for key in ("loss", "harmless_loss", "harmful_loss", "noise_loss", "step_time"):
            assert entry[key] > 0, key
    assert before and all("lora_" in name for name in before)
    after = dict(trainer.model.named_parameters())
    for name, value in before.items():
        assert not torch.equal(value, after[name]), name


def test_logged_terms_add_up_to_the_loss(tmp_path):
    trainer, _ = train(tmp_path, steps=1, alpha=1.0, beta=0.5)
    entry = next(e for e in trainer.state.log_history if "loss" in e)
    ascent = bounded_ascent(torch.tensor(entry["harmful_loss"]), vocab_size=128)
    expected = entry["harmless_loss"] + 0.5 * entry["noise_loss"] + ascent
    assert entry["loss"] == pytest.approx(float(expected), abs=1e-3)


def test_ascent_raises_harmful_ce_while_harmless_loss_falls(tmp_path):
    fluent = knows_harmful_answers()
    start_harmless, start_harmful = answer_losses(fluent)
    common = dict(steps=12, learning_rate=3e-3)
    sft, _ = train(tmp_path / "sft", alpha=0.0, model=copy.deepcopy(fluent), **common)
    defended, _ = train(tmp_path / "rn", alpha=1.0, model=copy.deepcopy(fluent), **common)
    sft_harmless, sft_harmful = answer_losses(sft.model)
    rn_harmless, rn_harmful = answer_losses(defended.model)
    # measured: harmful CE 0.99 -> 2.3 (alignment alone) vs 5.4 (RepNoise); harmless 5.5 -> 3.5 in both
    assert start_harmful < 1.5 and rn_harmful > sft_harmful + 1.5
    assert rn_harmless < start_harmless - 1.0 and rn_harmless < sft_harmless + 0.5


def test_config_defaults_do_not_perturb():
    args = RepNoiseConfig(output_dir="unused", report_to=[])
    assert not hasattr(args, "rho")  # no perturbation knob at all: RepNoise does not perturb
    assert (args.alpha, args.beta, args.noise_tokens) == (1.0, 0.001, 256)


def test_trainer_needs_a_repnoise_config(tmp_path):
    from vaccine.methods.vaccine import VaccineConfig

    with pytest.raises(TypeError):
        RepNoiseTrainer(model=make_tiny_model(), args=VaccineConfig(output_dir=str(tmp_path), report_to=[]))


@pytest.mark.parametrize(("field", "value"), [("alpha", -0.1), ("beta", -1.0), ("noise_tokens", 1)])
def test_config_rejects_bad_values_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        RepNoiseConfig(output_dir=str(tmp_path), **{field: value})


def test_rho_is_refused_naming_it(tmp_path):
    from vaccine.methods import METHODS

    with pytest.raises(TypeError, match="rho"):
        RepNoiseConfig(output_dir=str(tmp_path), rho=2.0)
    with pytest.raises(ConfigError, match="rho"):
        METHODS.build("repnoise", rho=2.0)


def test_evaluate_reports_the_combined_loss_without_touching_step_metrics(tmp_path):
    trainer, _ = train(tmp_path, steps=1)
    metrics = trainer.evaluate(eval_dataset=dataset())
    assert metrics["eval_loss"] > 0 and not trainer._window
