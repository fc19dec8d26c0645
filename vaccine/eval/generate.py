"""Batched greedy generation: left padding, KV cache, deterministic, same output as one prompt at a time.

The official evaluation generated one prompt at a time; batching is what makes a Harmful Score over
hundreds of prompts affordable. Prompts are sorted by length so a batch carries little padding, and the
answers are returned in the caller's order. Two engines give the same greedy answers: ``prefix`` (the
default: the shared chat-template prefix computed once, finished answers dropped from the batch;
``vaccine.eval.prefix_decode``) and ``hf`` (``transformers``' own ``generate``, the reference). A
vision-language model answers image+text prompts through :mod:`vaccine.eval.generate_images`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from vaccine.data.image_prompts import is_processor
from vaccine.data.templates import format_prompt
from vaccine.data.tokenize import prompt_ids
from vaccine.eval.generate_images import generate_with_images
from vaccine.eval.generation import ENGINES, GenerationSettings, equal_batches, greedy_answers
from vaccine.eval.prefix_decode import common_prefix_length, decode_batch, eos_ids

__all__ = ["ENGINES", "GenerationSettings", "equal_batches", "generate"]


def _encode(tokenizer: Any, texts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow each prompt directly
    try:
        batch = tokenizer.pad({"input_ids": [prompt_ids(tokenizer, t) for t in texts]}, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    desc: str = "generate",
    images: Sequence[str | None] | None = None,
) -> list[str]:
    """Greedy answers to ``prompts`` (formatted with the model's chat template), in the input order.

    ``images`` gives one image path (or None) per prompt. A vision-language model (loaded with a processor)
    answers through :mod:`vaccine.eval.generate_images`, with or without images; a text model as before."""
    settings = settings or GenerationSettings()
    if images is not None or is_processor(tokenizer):
        return generate_with_images(model, tokenizer, prompts, images, settings, desc=desc)
    texts = [format_prompt(tokenizer, p, settings.template) for p in prompts]
    if not texts:
        return []
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        run = _prefix_engine if settings.engine == "prefix" else _hf_engine
        return run(model, tokenizer, texts, settings, pad_id, desc)
    finally:
        model.train(was_training)


def _prefix_engine(
    model: Any, tokenizer: Any, texts: list[str], settings: GenerationSettings, pad_id: int, desc: str
) -> list[str]:
    token_lists = [prompt_ids(tokenizer, t) for t in texts]
    prefix_length = common_prefix_length(token_lists)
    prefix, stop = token_lists[0][:prefix_length], eos_ids(model, tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(token_lists[i]), reverse=True)
    answers: list[str] = [""] * len(texts)
    batches = equal_batches(order, settings.batch_size)
    for index in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 2):
        suffixes = [token_lists[i][prefix_length:] for i in index]
        new_tokens = decode_batch(model, prefix, suffixes, settings.max_new_tokens, pad_id, stop)
        for i, tokens in zip(index, new_tokens, strict=True):
            answers[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers


def _hf_engine(
    model: Any, tokenizer: Any, texts: list[str], settings: GenerationSettings, pad_id: int, desc: str
) -> list[str]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    answers: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    batches = equal_batches(order, settings.batch_size)
    for index in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 2):
        batch = _encode(tokenizer, [texts[i] for i in index], device)
        new = greedy_answers(model, tokenizer, batch, settings.max_new_tokens, pad_id)
        for i, answer in zip(index, new, strict=True):
            answers[i] = answer
    return answers
