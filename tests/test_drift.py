"""Embedding drift and alignment loss: zero for identical models, growing with a weight perturbation."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_model

from vaccine.eval.drift import DriftTracker, alignment_loss, embedding_drift


def batch(seed=0, size=3, length=10, pad=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 120, (size, length), generator=gen)
    mask = torch.ones_like(ids)
    if pad:
        ids = torch.nn.functional.pad(ids, (0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def perturbed(model, scale, seed=1):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_drift_is_zero_for_identical_models_and_grows_with_perturbation(arch):
    model = make_tiny_model(arch)
    batches = [batch(0), batch(1)]
    assert embedding_drift(model, copy.deepcopy(model), batches) == 0.0
    small = embedding_drift(model, perturbed(model, 0.001), batches)
    large = embedding_drift(model, perturbed(model, 0.01), batches)
    assert 0 < small < large
    assert embedding_drift(model, perturbed(model, 0.01), batches, "sum_sq") > 0


def test_padding_does_not_change_drift():
    model = make_tiny_model("llama")
    other = perturbed(model, 0.01)
    plain = embedding_drift(model, other, [batch(0)])
    padded = embedding_drift(model, other, [batch(0, pad=5)])
    assert padded == pytest.approx(plain, rel=1e-5)


def test_alignment_loss_is_token_weighted():
    model = make_tiny_model("llama")
    a, b = batch(0, size=2), batch(1, size=2, length=20)
    whole = alignment_loss(model, [a, b])
    assert min(alignment_loss(model, [a]), alignment_loss(model, [b])) <= whole
    assert whole <= max(alignment_loss(model, [a]), alignment_loss(model, [b]))


def test_tracker_measures_from_the_starting_model(tmp_path):
    class State:
        global_step = 0

    model = make_tiny_model("llama")
    tracker = DriftTracker([batch(0)], every=2, path=tmp_path / "drift.jsonl")
    tracker.on_train_begin(None, State(), None, model=model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    State.global_step = 2
    tracker.on_step_end(None, State(), None, model=model)
    State.global_step = 3
    tracker.on_step_end(None, State(), None, model=model)
    assert [row["step"] for row in tracker.history] == [0, 2]
    assert tracker.history[0]["drift"] == 0.0 and tracker.history[1]["drift"] > 0
    assert len((tmp_path / "drift.jsonl").read_text().splitlines()) == 2
