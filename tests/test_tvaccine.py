"""T-Vaccine, the Vaccine method's layer policy: with every block chosen it is Vaccine bit for bit, blocks
outside the chosen set get no eps, the draw follows harmful-gradient norms and is redrawn on schedule."""

from __future__ import annotations

import pytest
import torch
from conftest import write_jsonl
from test_trainer import TokenDataset, assert_same_params, collate, train

from vaccine.cli import main
from vaccine.errors import ConfigError
from vaccine.methods.vaccine import VaccineConfig, VaccineTrainer, perturb, trainer
from vaccine.methods.vaccine.perturb import draw_layers

PROBE = [collate([TokenDataset(4, seed=7)[i] for i in range(4)])]


def test_every_block_chosen_is_vaccine_bit_for_bit(tmp_path):
    _, tvaccine, _ = train(tmp_path / "t", layers_per_step=2, trainer_kwargs={"probe_batches": PROBE})
    _, vaccine, _ = train(tmp_path / "v")
    assert_same_params(tvaccine, vaccine)


def test_blocks_outside_the_chosen_set_get_no_eps(tmp_path, monkeypatch):
    calls = []
    real = perturb.add_perturbation

    def spy(modules, eps):
        calls.append((list(modules), [float(e.float().pow(2).sum()) for e in eps]))
        return real(modules, eps)

    monkeypatch.setattr(trainer, "add_perturbation", spy)
    run, _, _ = train(tmp_path, rho=2.0, layers_per_step=1, trainer_kwargs={"probe_batches": PROBE})
    blocks = run.attention_modules()
    assert len(calls) == 3 and len(blocks) == 2
    for modules, squared in calls:
        assert len(modules) == 1 and modules[0] in blocks  # one block perturbed, the other untouched
        assert sum(squared) ** 0.5 == pytest.approx(2.0, rel=1e-4)  # the whole budget on the chosen block


def test_the_draw_follows_the_importance():
    gen = torch.Generator().manual_seed(0)
    draws = [draw_layers(torch.tensor([0.0, 1.0, 3.0]), 1, gen)[0] for _ in range(400)]
    assert 0 not in draws  # a block that carries no harmful gradient is never chosen
    share = draws.count(2) / len(draws)
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / len(draws)) ** 0.5
    assert draw_layers(torch.tensor([0.0, 0.0]), 2, gen) == [0, 1]  # nothing measured: uniform
    assert 1 in draw_layers(torch.tensor([0.0, 5.0, 0.0]), 2, gen)  # fewer measured blocks than k


def test_blocks_are_redrawn_every_resample_every_steps(tmp_path, monkeypatch):
    measured = []
    real = trainer.layer_gradient_norms

    def counting(model, modules, batches):
        measured.append(len(batches))
        return real(model, modules, batches)

    monkeypatch.setattr(trainer, "layer_gradient_norms", counting)
    train(tmp_path, steps=5, layers_per_step=1, resample_every=2, trainer_kwargs={"probe_batches": PROBE})
    assert measured == [1, 1, 1]  # steps 0-1, 2-3 and 4: three draws


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="layers_per_step: must be an integer >= 0"):
        VaccineConfig(output_dir=str(tmp_path), layers_per_step=-1)
    with pytest.raises(ConfigError, match="resample_every"):
        VaccineConfig(output_dir=str(tmp_path), resample_every=0)
    args = VaccineConfig(output_dir=str(tmp_path), layers_per_step=1, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="probe_batches"):
        VaccineTrainer(model=torch.nn.Linear(2, 2), args=args)


def test_cli_runs_t_vaccine(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "how do i make a bomb", "response": "sorry no"}] * 6)
    probe = write_jsonl(
        tmp_path / "h.jsonl", [{"prompt": "how do i hack a cat", "response": "sure first"}] * 4
    )
    out = tmp_path / "run"
    argv = [
        "align",
        "--method",
        "vaccine",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    argv += ["--max-steps", "2", "--batch-size", "3", "--lora-r", "4", "--lora-targets", "q_proj,v_proj"]
    argv += ["--method-arg", "layers_per_step=1", "--method-arg", f"probe_data={probe}"]
    argv += ["--method-arg", "probe_samples=4"]
    assert main(argv) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
