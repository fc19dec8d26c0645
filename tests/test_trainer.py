"""VaccineTrainer against the plain Trainer: invariants, pass counts, accumulation, logs, LoRA."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, quiet_args
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from vaccine.errors import ConfigError
from vaccine.methods.vaccine import VaccineConfig, VaccineTrainer
from vaccine.peak_memory import peak_memory_mb, release_freed_memory, reset_peak_memory


class TokenDataset(torch.utils.data.Dataset):
    """Random sequences of varying length whose first 3 tokens are a masked 'prompt'."""

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.rows = []
        for _ in range(n):
            length = int(torch.randint(6, 14, (1,), generator=gen))
            ids = torch.randint(6, 120, (length,), generator=gen)
            labels = ids.clone()
            labels[:3] = -100
            self.rows.append({"input_ids": ids, "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.stack(
            [torch.nn.functional.pad(r[key], (0, width - len(r[key])), value=value) for r in rows]
        )

    mask = torch.stack(
        [
            torch.nn.functional.pad(torch.ones_like(r["input_ids"]), (0, width - len(r["input_ids"])))
            for r in rows
        ]
    )
    return {"input_ids": pad("input_ids", 0), "labels": pad("labels", -100), "attention_mask": mask}


def train(
    tmp_path,
    *,
    rho=2.0,
    tau=1,
    batch=4,
    accumulation=1,
    steps=3,
    arch="llama",
    lora=False,
    trainer_cls=VaccineTrainer,
    learning_rate=1e-2,
    trainer_kwargs=None,
    **extra,
):
    model = make_tiny_model(arch)
    if lora:
        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        )
    common = quiet_args(
        tmp_path,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=learning_rate,
        logging_steps=1,
        **extra,
    )
    args = (
        VaccineConfig(rho=rho, tau=tau, **common)
        if trainer_cls is VaccineTrainer
        else TrainingArguments(**common)
    )
    trainer = trainer_cls(
        model=model, args=args, train_dataset=TokenDataset(), data_collator=collate, **(trainer_kwargs or {})
    )
    forwards = []
    model.register_forward_pre_hook(lambda *a: forwards.append(1))
    trainer.train()
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return trainer, params, len(forwards)


def assert_same_params(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name


def test_rho_zero_with_full_logits_is_the_plain_trainer_bit_for_bit(tmp_path):
    _, ours, _ = train(tmp_path / "a", rho=0.0, trainer_kwargs={"answer_only_logits": False})
    _, plain, _ = train(tmp_path / "b", trainer_cls=Trainer)
    assert_same_params(ours, plain)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_answer_only_logits_train_like_the_plain_trainer(tmp_path, accumulation):
    # the fast path (default) reorders float sums only: same updates to round-off, with accumulation too
    kw = dict(batch=8 // accumulation, accumulation=accumulation, optim="sgd", learning_rate=0.5)
    _, ours, _ = train(tmp_path / "a", rho=0.0, **kw)
    _, plain, _ = train(tmp_path / "b", trainer_cls=Trainer, **kw)
    assert_same_params(ours, plain, atol=1e-6)
    assert any(not torch.equal(ours[n], make_tiny_model("llama").state_dict()[n]) for n in ours)


def test_vaccine_changes_the_update(tmp_path):
    _, sft, _ = train(tmp_path / "a", rho=0.0)
    _, vaccine, _ = train(tmp_path / "b", rho=2.0)
    assert any(not torch.allclose(sft[n], vaccine[n]) for n in sft)


@pytest.mark.parametrize(("tau", "steps", "perturbed"), [(1, 4, 4), (3, 7, 3), (100, 5, 1)])
def test_passes_per_step_follow_tau(tmp_path, tau, steps, perturbed):
    trainer, _, forwards = train(tmp_path, tau=tau, steps=steps)
    assert trainer.perturbation_passes == perturbed
    assert forwards == steps + perturbed


def test_sft_runs_one_pass_per_step(tmp_path):
    trainer, _, forwards = train(tmp_path, rho=0.0, steps=4)
    assert forwards == 4 and trainer.perturbation_passes == 0


@pytest.mark.parametrize("norm", ["batch", "sample"])
def test_accumulation_2x4_matches_batch_of_8(tmp_path, norm):
    # SGD, because Adam divides by sqrt(v) and turns float round-off on near-zero gradients into visible steps
    kw = dict(steps=2, perturbation_norm=norm, optim="sgd", learning_rate=0.5)
    _, big, _ = train(tmp_path / "a", batch=8, accumulation=1, **kw)
    _, accumulated, _ = train(tmp_path / "b", batch=4, accumulation=2, **kw)
    assert_same_params(big, accumulated, atol=1e-6)


def test_logs_clean_and_perturbed_loss_time_and_memory(tmp_path):
    trainer, _, _ = train(tmp_path, rho=2.0, tau=2, steps=4)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4
    for step, entry in enumerate(logs):
        assert entry["clean_loss"] > 0 and entry["step_time"] > 0 and entry["peak_memory_mb"] > 0
        assert ("perturbed_loss" in entry) == (step % 2 == 0)
        if "perturbed_loss" in entry:
            assert entry["perturbed_loss"] > entry["clean_loss"]
            assert entry["loss"] == pytest.approx(entry["perturbed_loss"], rel=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_trains_only_adapters_under_vaccine(tmp_path, arch):
    model_before = make_tiny_model(arch)
    trainer, params, forwards = train(tmp_path, lora=True, arch=arch, steps=2)
    assert params and all("lora_" in name for name in params)
    assert forwards == 4
    base = trainer.model.get_base_model()
    for name, p in model_before.named_parameters():
        assert torch.equal(p, base.get_parameter(name)), name


def test_training_step_outside_the_loop_still_perturbs(tmp_path):
    model = make_tiny_model("llama")
    args = VaccineConfig(output_dir=str(tmp_path), rho=2.0, report_to=[], use_cpu=True)
    trainer = VaccineTrainer(model=model, args=args, train_dataset=TokenDataset(), data_collator=collate)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # the Trainer's loop sets this; so must any direct caller
    inputs = collate([TokenDataset()[i] for i in range(4)])
    perturbed = trainer.training_step(model, inputs)
    with torch.no_grad():
        clean = model(**inputs).loss
    assert trainer.perturbation_passes == 1 and perturbed > clean


@pytest.mark.parametrize(("field", "value"), [("rho", -1.0), ("tau", 0), ("perturbation_norm", "layer")])
def test_config_rejects_bad_values_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        VaccineConfig(output_dir=str(tmp_path), **{field: value})


@pytest.mark.skipif(not reset_peak_memory(torch.device("cpu")), reason="needs Linux's peak-RSS reset")
def test_logged_peak_memory_is_the_steps_own_not_the_process_lifetime_peak(tmp_path):
    # a grid trains stages one after another in one process: an attack must not report the alignment's peak
    block = torch.ones(512, 2**18)  # 512 MiB, written
    block.add_(1)
    peak_while_held = peak_memory_mb(torch.device("cpu"))
    del block
    release_freed_memory()
    trainer, _, _ = train(tmp_path, rho=0.0, steps=2)
    logged = [entry["peak_memory_mb"] for entry in trainer.state.log_history if "peak_memory_mb" in entry]
    assert logged and max(logged) < peak_while_held - 400
