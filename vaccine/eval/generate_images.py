"""Batched greedy answers of a vision-language model to image+text prompts (and to text prompts).

The same rules as the text path's ``hf`` engine (:mod:`vaccine.eval.generate`): prompts sorted by length into
near-equal batches, left padding, transformers' ``generate`` with the KV cache, answers returned in the
caller's order. Prompts are encoded exactly as training encodes them (:mod:`vaccine.data.image_tokenize`),
so the image placeholder and its tokens match. The text path's ``prefix`` engine does not apply: the image
tokens sit inside the prompt, not in a shared prefix, so a VLM always generates through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from vaccine.data.image_prompts import is_processor
from vaccine.data.image_tokenize import VisionCollator, encode_vision_prompt
from vaccine.errors import DataError
from vaccine.eval.generation import GenerationSettings, equal_batches, greedy_answers


@torch.no_grad()
def generate_with_images(
    model: torch.nn.Module,
    processor: Any,
    prompts: Sequence[str],
    images: Sequence[str | None] | None,
    settings: GenerationSettings,
    *,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to ``prompts``, each with its image path in ``images`` (None: text only)."""
    images = list(images) if images is not None else [None] * len(prompts)
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    if not is_processor(processor):
        first = next(i for i, image in enumerate(images) if image is not None)
        raise DataError(
            f"prompt {first} ({prompts[first][:60]!r}) comes with an image, but the model loaded as a "
            "text-only model (a tokenizer, no image processor); use a vision-language model or text prompts"
        )
    if not prompts:
        return []
    examples = [
        encode_vision_prompt(processor, p, image, settings.template)
        for p, image in zip(prompts, images, strict=True)
    ]
    collate = VisionCollator(processor, padding_side="left")
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]), reverse=True)
    answers: list[str] = [""] * len(examples)
    was_training = model.training
    model.eval()
    try:
        batches = equal_batches(order, settings.batch_size)
        for index in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 2):
            batch = {key: value.to(device) for key, value in collate([examples[i] for i in index]).items()}
            new = greedy_answers(model, tokenizer, batch, settings.max_new_tokens, pad_id)
            for i, answer in zip(index, new, strict=True):
                answers[i] = answer
    finally:
        model.train(was_training)
    return answers
