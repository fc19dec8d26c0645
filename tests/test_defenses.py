"""Every fine-tune-stage defense runs, and each regularizer does what it claims, on a tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny_model
from transformers import TrainingArguments

from vaccine.data.context import DataContext
from vaccine.data.records import Record
from vaccine.defenses import DEFENSES
from vaccine.defenses.kl import token_kl
from vaccine.errors import ConfigError
from vaccine.finetune_trainer import FinetuneContext, FinetuneTrainer
from vaccine.lora import LoraSettings, attach_lora
from vaccine.methods import METHODS

USER = [
    Record(f"write a poem about the cat {i % 7}", "sure here are steps first then finally", "t", "harmful")
    for i in range(24)
]
ALIGNMENT = [
    Record(f"how do i make a bomb {i % 5}", "no sorry i cannot help with that", "t", "safe")
    for i in range(16)
]
LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def context(tokenizer) -> FinetuneContext:
    return FinetuneContext(DataContext(tokenizer, "chat", 64), ALIGNMENT, None, "double", seed=0)


def finetune(tmp_path, tokenizer, defense_name="none", steps=6, lr=5e-2, **knobs):
    torch.manual_seed(0)
    model = attach_lora(make_tiny_model("llama"), LORA)
    defense = DEFENSES.build(defense_name, **knobs)
    ctx = context(tokenizer)
    records = defense.prepare_data(USER, ctx)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=steps,
        learning_rate=lr,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        lr_scheduler_type="constant",
    )
    trainer = FinetuneTrainer(
        model=model,
        args=args,
        train_dataset=ctx.data.dataset(records),
        data_collator=ctx.data.collator(),
        defense=defense,
        context=ctx,
    )
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    return trainer, initial


def drift(trainer, initial) -> float:
    return (
        sum(
            (p.detach() - initial[n]).pow(2).sum().item()
            for n, p in trainer.model.named_parameters()
            if p.requires_grad
        )
        ** 0.5
    )


def reference_kl(trainer, tokenizer) -> float:
    ctx = context(tokenizer)
    batch = ctx.data.collator()([ctx.data.dataset(USER)[i] for i in range(8)])
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        with model.disable_adapter():
            reference = model(**batch).logits
    return token_kl(reference, logits, batch["labels"]).item()


@pytest.mark.parametrize("name", list(DEFENSES))
def test_every_finetune_defense_runs_and_trains_every_adapter_weight(tmp_path, tiny_tokenizer, name):
    knobs = {"vlguard": {"m": 8}}.get(name, {})
    trainer, initial = finetune(tmp_path, tiny_tokenizer, name, steps=3, **knobs)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 3 and all(e["task_loss"] > 0 and e["step_time"] > 0 for e in logs)
    assert ("penalty" in logs[-1]) == (name in ("ewc", "kl", "lisa"))
    for n, p in trainer.model.named_parameters():
        if p.requires_grad and "lora_B" in n:
            assert not torch.equal(p, initial[n]), n


def test_ewc_with_a_huge_lambda_keeps_weights_near_w0(tmp_path, tiny_tokenizer):
    # Adam moves every weight by about lr per step whatever its gradient, so even an infinite penalty leaves
    # an lr-sized wobble around w0; free weights drift further with every step.
    free, free_init = finetune(tmp_path / "a", tiny_tokenizer, "ewc", lam=0.0, lr=5e-3, steps=24)
    held, held_init = finetune(tmp_path / "b", tiny_tokenizer, "ewc", lam=1e6, lr=5e-3, steps=24)
    assert drift(held, held_init) < 0.2 * drift(free, free_init)


def test_kl_ends_closer_to_the_aligned_model_than_no_kl(tmp_path, tiny_tokenizer):
    plain, _ = finetune(tmp_path / "a", tiny_tokenizer, "kl", lam=0.0, steps=8)
    regularized, _ = finetune(tmp_path / "b", tiny_tokenizer, "kl", lam=100.0, steps=8)
    assert reference_kl(regularized, tiny_tokenizer) < 0.5 * reference_kl(plain, tiny_tokenizer)


def test_token_kl_is_over_the_vocabulary_not_the_sequence():
    torch.manual_seed(0)
    logits, reference = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, 3, 4, 5, 6], [-100, -100, 1, 2, -100]])
    # a constant added to one position's whole vocabulary leaves its softmax over the vocabulary unchanged
    shifted = logits.clone()
    shifted[0, 2] += 7.0
    assert token_kl(reference, shifted, labels).item() == pytest.approx(
        token_kl(reference, logits, labels).item()
    )
    assert token_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    mask = labels[:, 1:] != -100
    p = reference[:, :-1][mask].softmax(-1)
    q = logits[:, :-1][mask].softmax(-1)
    manual = (p * (p.log() - q.log())).sum(-1).mean()
    assert token_kl(reference, logits, labels).item() == pytest.approx(manual.item(), rel=1e-5)


def test_vlguard_adds_exactly_m_alignment_samples(tiny_tokenizer):
    defense = DEFENSES.build("vlguard", m=9)
    mixed = defense.prepare_data(USER, context(tiny_tokenizer))
    assert len(mixed) == len(USER) + 9
    assert sum(r.label == "safe" for r in mixed) == 9
    assert all(r in ALIGNMENT for r in mixed if r.label == "safe")


def test_lisa_alternates_states_and_pulls_toward_the_switch_point(tmp_path, tiny_tokenizer):
    trainer, _ = finetune(tmp_path, tiny_tokenizer, "lisa", steps=6, alignment_steps=1, finetune_steps=2)
    flags = [e["alignment_step"] for e in trainer.state.log_history if "loss" in e]
    assert flags == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    near, near_init = finetune(tmp_path / "b", tiny_tokenizer, "lisa", rho=1e5, alignment_steps=0)
    far, far_init = finetune(tmp_path / "c", tiny_tokenizer, "lisa", rho=0.0, alignment_steps=0)
    assert drift(near, near_init) < 0.2 * drift(far, far_init)


def test_registry_knobs_are_validated_and_coerced():
    assert DEFENSES.build("ewc", lam="10").lam == 10.0
    with pytest.raises(ConfigError, match="no knob 'lambda'"):
        DEFENSES.build("ewc", **{"lambda": 1})
    with pytest.raises(ConfigError, match="defense: unknown fine-tune-stage defense 'nope'"):
        DEFENSES.build("nope")
    with pytest.raises(ConfigError, match="must be a float"):
        DEFENSES.build("kl", lam="big")
    with pytest.raises(ConfigError, match="method: unknown alignment method 'ewc'"):
        METHODS.lookup("ewc")
    assert all(dataclasses.is_dataclass(cls) for cls in [*DEFENSES.values(), *METHODS.values()])
    assert set(METHODS) == {"sft", "vaccine", "repnoise", "booster"} and "none" in DEFENSES
