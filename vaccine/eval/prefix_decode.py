"""Exact greedy decoding that computes the prompts' shared prefix once and drops finished answers.

Every harmful prompt is wrapped in the same chat template, whose system prompt and role markers are a long
common token prefix (about half of each prompt on SmolLM2), and an aligned model ends most answers after a
few tokens ("I can't help with that."). ``transformers``' ``generate`` recomputes the prefix for every row
and keeps decoding finished rows until the longest one ends. Here:

1. the longest common token prefix of all prompts is run once (batch 1) and its KV cache is repeated over
   the batch; each prompt's remaining tokens are left-padded *after* the prefix, with the attention mask
   hiding the pads and explicit position ids keeping every real token at its true position;
2. after each step, rows that produced an end-of-sequence token leave the batch (and the KV cache);
3. keys and values are written into buffers allocated once for the whole answer (``ReservedLayer``),
   where ``transformers``' dynamic cache concatenates the whole cache at every step of every layer
   (a fifth of the decoding time on the embedded model, profiled).

The token sequence each answer sees is exactly the one ``generate`` sees, so answers are the same greedy
answers (tested against ``generate`` on several architectures, and on the embedded model in benchmarks/).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def common_prefix_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every list at least one token of its own (the first
    forward pass must produce each row's next-token logits)."""
    shortest = min(len(t) for t in token_lists)
    length = 0
    while length < shortest - 1 and all(t[length] == token_lists[0][length] for t in token_lists):
        length += 1
    return length


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end an answer: the generation config's (one or a list), else the tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return set()
    return set(configured) if isinstance(configured, list | tuple) else {int(configured)}


def _accepts(model: Any, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _cache_argument(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x, per model); use whichever it takes."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class ReservedLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views into buffers reserved for ``reserve``
    tokens: a step writes its token in place instead of copying the cache (the buffer grows if a step
    ever needs more). The values attention reads are the same; only where they live changes."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.key_buffer = key_states.new_empty((*key_states.shape[:2], self.reserve, key_states.shape[3]))
            self.value_buffer = value_states.new_empty(
                (*value_states.shape[:2], self.reserve, value_states.shape[3])
            )
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[2]:
            self.key_buffer, self.value_buffer = (
                torch.cat([b, b.new_empty((*b.shape[:2], end, b.shape[3]))], 2)
                for b in (self.key_buffer, self.value_buffer)
            )
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        return self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._views()


def reserved_cache(model: Any, reserve: int) -> DynamicCache:
    """The model's dynamic cache with every full-attention layer replaced by a ``ReservedLayer``; sliding
    window and other special layers stay as ``transformers`` builds them."""
    cache = DynamicCache(config=model.config)
    cache.layers = [
        ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
        mask[i, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def decode_batch(
    model: Any, prefix: list[int], suffixes: list[list[int]], max_new_tokens: int, pad_id: int, stop: set[int]
) -> list[list[int]]:
    """Greedy new tokens (ending with the end token, if one came) for prompts ``prefix + suffix``."""
    device = next(model.parameters()).device
    batch = len(suffixes)
    keep_last = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_arg = _cache_argument(model)
    ids, suffix_mask = _left_pad(suffixes, pad_id, device)
    cache = reserved_cache(model, len(prefix) + ids.shape[1] + max_new_tokens)
    if prefix:
        prefix_ids = torch.tensor([prefix], dtype=torch.long, device=device)
        model(input_ids=prefix_ids, use_cache=True, **{cache_arg: cache}, **keep_last)
        cache.batch_repeat_interleave(batch)
    mask = torch.cat([torch.ones((batch, len(prefix)), dtype=torch.long, device=device), suffix_mask], 1)
    positions = len(prefix) + (suffix_mask.cumsum(1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_arg: cache},
        **keep_last,
    )
    cache, next_token = _cache_of(out), out.logits[:, -1].argmax(-1)
    position = positions[:, -1]
    rows = torch.arange(batch, device=device)  # which answer each live batch row belongs to
    answers: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        finished = torch.tensor(
            [int(t) in stop for t in next_token.tolist()], dtype=torch.bool, device=device
        )
        for row, token in zip(rows.tolist(), next_token.tolist(), strict=True):
            answers[row].append(token)  # the end token too, as generate keeps it (decoding drops specials)
        alive = ~finished
        if step == max_new_tokens - 1 or not alive.any():
            break
        if not alive.all():
            keep = alive.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, position, next_token = rows[keep], mask[keep], position[keep], next_token[keep]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long, device=device)], 1)
        position = position + 1
        out = model(
            input_ids=next_token[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            use_cache=True,
            **{cache_arg: cache},
        )
        cache, next_token = _cache_of(out), out.logits[:, -1].argmax(-1)
    return answers
