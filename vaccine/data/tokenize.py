"""Turn records into causal-LM training examples whose loss covers the answer only.

The prompt is tokenized on its own and the answer appended as token ids, so the boundary between masked
prompt and labelled answer is exact (tokenizing the joined text can merge tokens across the boundary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vaccine.answer_loss import IGNORE_INDEX
from vaccine.data.records import Record
from vaccine.data.templates import format_prompt
from vaccine.errors import ConfigError


def needs_bos(tokenizer: Any, text: str) -> bool:
    """True where the tokenizer adds a BOS token and the (templated) text did not write it already."""
    bos = tokenizer.bos_token_id
    if bos is None or (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        return False
    return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Prompt token ids, with BOS only where the tokenizer adds one and the template did not write it: the
    same ids in training and in generation (Gemma, trained with its BOS and answering without it, echoes the
    prompt or stops after a word)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id] + ids if needs_bos(tokenizer, text) else ids


def truncate(prompt: list[int], answer: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut the answer from its end; if the prompt alone fills the window, cut the prompt from its start
    so that at least one answer token stays labelled (an all-masked example trains nothing)."""
    if len(prompt) + len(answer) <= max_length:
        return prompt, answer
    keep = min(len(answer), max(max_length - len(prompt), 1))
    return prompt[len(prompt) - (max_length - keep) :], answer[:keep]


def encode_record(
    tokenizer: Any, record: Record, template: str = "chat", max_length: int = 256, system: str | None = None
) -> dict[str, list[int]]:
    """input_ids / attention_mask / labels for one record; prompt positions are labelled -100."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token; training needs one to teach the model to stop")
    prompt = prompt_ids(tokenizer, format_prompt(tokenizer, record.prompt, template, system))
    answer = tokenizer(record.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt, answer = truncate(prompt, answer, max_length)
    ids = prompt + answer
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt) + answer,
    }


class CompletionDataset(Dataset):
    """Records encoded once, up front: tokenization errors surface before training starts."""

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: Any,
        template: str = "chat",
        max_length: int = 256,
        system: str | None = None,
    ):
        self.records = list(records)
        self.examples = [encode_record(tokenizer, r, template, max_length, system) for r in self.records]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


class CompletionCollator:
    """Right-pads a batch to tensors: pad id for inputs (eos if the tokenizer has no pad), 0 for the
    attention mask and -100 for labels, so padding never counts in the loss or in per-token statistics."""

    def __init__(
        self, tokenizer: Any = None, pad_token_id: int | None = None, pad_to_multiple_of: int | None = None
    ):
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            )
        if pad_token_id is None:
            raise ConfigError("no pad token id: pass a tokenizer with a pad or eos token, or pad_token_id")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def _width(self, features: Sequence[dict[str, list[int]]]) -> int:
        width = max(len(f["input_ids"]) for f in features)
        step = self.pad_to_multiple_of
        return -(-width // step) * step if step else width

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = self._width(features)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        return {
            key: torch.tensor(
                [list(f[key]) + [pad] * (width - len(f[key])) for f in features], dtype=torch.long
            )
            for key, pad in pads.items()
        }
