"""t-SNE pictures: one joint fit, one PNG, from a tiny model's embeddings."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_tiny_model

from vaccine.eval.tsne import joint_tsne, sentence_embeddings, tsne_figure


def test_embeddings_ignore_padding_and_the_figure_is_written(tmp_path):
    model = make_tiny_model("llama")
    ids = torch.randint(6, 120, (4, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    padded = {
        "input_ids": torch.nn.functional.pad(ids, (0, 3)),
        "attention_mask": torch.nn.functional.pad(mask, (0, 3)),
    }
    plain = sentence_embeddings(model, [{"input_ids": ids, "attention_mask": mask}])
    assert plain.shape == (4, 32)
    assert np.allclose(plain, sentence_embeddings(model, [padded]), atol=1e-5)
    rng = np.random.default_rng(0)
    sets = {"aligned": rng.normal(size=(15, 32)), "p=0.1": rng.normal(loc=3.0, size=(15, 32))}
    coords = joint_tsne(sets)
    assert {k: v.shape for k, v in coords.items()} == {"aligned": (15, 2), "p=0.1": (15, 2)}
    # well separated clouds stay separated in the joint map
    gap = np.linalg.norm(coords["aligned"].mean(0) - coords["p=0.1"].mean(0))
    assert gap > coords["aligned"].std(0).mean()
    path = tsne_figure(sets, tmp_path / "tsne.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
