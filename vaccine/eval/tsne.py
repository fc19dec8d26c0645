"""t-SNE pictures of alignment-data embeddings: the paper's view of harmful embedding drift.

Every model's embeddings go into ONE joint t-SNE, so the clouds share coordinates and their displacement is
visible; per-model t-SNE fits would each invent their own axes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaccine.settings import ModelSettings, same_as, setting


@dataclass(kw_only=True)
class TsneSpec:
    """One joint t-SNE of an alignment sample's embeddings under several model views (``vaccine tsne``)."""

    model: str = same_as(ModelSettings, "model")
    views: list[tuple[str, str]] = setting(
        help="a label and comma-separated adapters merged in order ('-' for the base model); repeatable",
        flag="--view",
        metavar=("LABEL", "ADAPTERS"),
    )
    data: str = setting("alignment", "the samples to embed: a built-in split or a file")
    num_samples: int = setting(100, "a seeded sample of the data")
    layer: int = setting(-1, "hidden-state layer to embed (default: the last)")
    seed: int = setting(42, "seeds the sample and the t-SNE")
    out: Path = setting(help="PNG file")


@torch.no_grad()
def sentence_embeddings(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], layer: int = -1
) -> np.ndarray:
    """Mean over real tokens of one layer's hidden state (default: the last), one row per sample. Every model
    input of the batch is passed (a VLM's pixels too), the labels are not."""
    model.eval()
    rows = []
    for batch in batches:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        out = model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[layer].float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(rows).numpy()


def joint_tsne(embeddings: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """2-D coordinates for every set, from one t-SNE fit over all of them."""
    from sklearn.manifold import TSNE

    stacked = np.concatenate(list(embeddings.values()))
    perplexity = float(min(30, max(2, (len(stacked) - 1) // 3)))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(stacked)
    out, start = {}, 0
    for label, rows in embeddings.items():
        out[label] = coords[start : start + len(rows)]
        start += len(rows)
    return out


def tsne_figure(embeddings: dict[str, np.ndarray], path: str | Path, title: str, seed: int = 0) -> Path:
    """Scatter the joint t-SNE of each labelled set into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = joint_tsne(embeddings, seed)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for label, xy in coords.items():
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7, label=label)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def view_embeddings(
    model_name: str, views: dict[str, list[Path]], records: list, dtype: str = "float32", layer: int = -1
) -> dict[str, np.ndarray]:
    """Each view's embeddings of the same records: the base model with that view's adapters merged in order
    (an empty list: the base model). The batches come in one fixed order, so rows line up across views."""
    from vaccine.data.context import DataContext
    from vaccine.run_folders import load_merged_model

    embeddings = {}
    for label, adapters in views.items():
        model, tokenizer = load_merged_model(model_name, adapters, dtype=dtype)
        embeddings[label] = sentence_embeddings(model, DataContext(tokenizer).loader(records, 16, 0), layer)
    return embeddings
