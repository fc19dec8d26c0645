"""Records with images -> token ids with answer-only labels, and the collator that batches their images.

The text path's rules hold: the prompt is encoded on its own and the answer appended as token ids, so the
boundary between masked prompt and labelled answer is exact, and BOS is added where the tokenizer adds one.
The prompt goes through the processor, which expands the image placeholder into the model's image tokens
(LLaVA-1.5: 576 of them), so the labels line up with what the language model sees.

Pixels are not kept in the data set (2000 LLaVA images would hold 2.7 GB of floats): an example holds the
image's path, and the collator runs the model's own image processor over each batch's images, which also
gives each family its own batch layout (LLaVA and Qwen2-VL: one row per image or patch; Idefics3: a batch
axis padded with empty images, which its model drops), for batches that mix image and text-only records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vaccine.answer_loss import IGNORE_INDEX
from vaccine.data.image_prompts import open_image, vision_prompt
from vaccine.data.records import Record
from vaccine.data.tokenize import needs_bos, truncate
from vaccine.errors import ConfigError, DataError

IMAGE_KEY = (
    "image"  # an example's image path (None for a text-only record); the collator turns it into pixels
)
# Token-aligned keys some processors return beside input_ids, which their models need: Qwen2-VL's M-RoPE reads
# which positions are image tokens. Answer and padding positions are text (0).
EXTRA_TOKEN_KEYS = ("mm_token_type_ids",)


def _where(record: Record) -> str:
    return record.meta.get("where") or f"record {record.prompt[:60]!r}"


def prompt_tokens(processor: Any, text: str, image: str | None, where: str) -> dict[str, list[int]]:
    """``input_ids`` and the extra token keys of a prompt, the image placeholder expanded (BOS as the text
    path adds it)."""
    images = [[open_image(image, where)]] if image is not None else None
    try:
        encoded = processor(text=[text], images=images, add_special_tokens=False)
    except ValueError as err:  # e.g. the template wrote no placeholder for the image
        raise DataError(f"{where}: the processor cannot encode this prompt with its image: {err}") from None
    tokens = {key: list(encoded[key][0]) for key in ("input_ids", *EXTRA_TOKEN_KEYS) if key in encoded}
    tokenizer = processor.tokenizer
    if needs_bos(tokenizer, text):
        tokens = {key: [tokenizer.bos_token_id if key == "input_ids" else 0, *v] for key, v in tokens.items()}
    return tokens


def encode_vision_record(
    processor: Any, record: Record, template: str = "chat", max_length: int = 256, system: str | None = None
) -> dict[str, Any]:
    """input_ids / attention_mask / labels (prompt positions -100), the extra token keys, and the image path.

    A prompt that is cut can lose image tokens, which the model would then not match with the image's
    features; so a prompt with an image that leaves no room for its answer is an error naming the record,
    not a silent cut. Text-only records are cut as the text path cuts them."""
    tokenizer = processor.tokenizer
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token; training needs one to teach the model to stop")
    where = _where(record)
    text = vision_prompt(processor, record.prompt, record.image is not None, template, system)
    tokens = prompt_tokens(processor, text, record.image, where)
    ids = tokens.pop("input_ids")
    if record.image is not None and len(ids) >= max_length:
        raise DataError(
            f"{where}: the prompt with its image is {len(ids)} tokens, and max_length {max_length} leaves no "
            "room for the answer; raise max_length (LLaVA-1.5's image alone is 576 tokens)"
        )
    answer = tokenizer(record.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt, answer = truncate(ids, answer, max_length)
    start = len(ids) - len(prompt)
    example: dict[str, Any] = {
        "input_ids": prompt + answer,
        "attention_mask": [1] * (len(prompt) + len(answer)),
        "labels": [IGNORE_INDEX] * len(prompt) + answer,
    }
    example.update({key: values[start:] + [0] * len(answer) for key, values in tokens.items()})
    example[IMAGE_KEY] = record.image
    return example


def encode_vision_prompt(
    processor: Any, prompt: str, image: str | None, template: str = "chat", where: str | None = None
) -> dict[str, Any]:
    """A generation input: the prompt's tokens (no answer, no labels) and its image path."""
    text = vision_prompt(processor, prompt, image is not None, template)
    tokens = prompt_tokens(processor, text, image, where or f"prompt {prompt[:60]!r}")
    return {**tokens, "attention_mask": [1] * len(tokens["input_ids"]), IMAGE_KEY: image}


class VisionCompletionDataset(Dataset):
    """Records encoded once, up front (each image opened once to count its tokens): a missing or unreadable
    image, or a prompt too long for its image, fails before training starts."""

    def __init__(
        self,
        records: Sequence[Record],
        processor: Any,
        template: str = "chat",
        max_length: int = 256,
        system: str | None = None,
    ):
        self.records = list(records)
        self.examples = [
            encode_vision_record(processor, r, template, max_length, system) for r in self.records
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


class VisionCollator:
    """Pads the token keys (pad id for inputs, 0 for masks and token types, -100 for labels) on the right
    for training or the left for generation, and adds the batch's pixels from the model's image processor."""

    def __init__(self, processor: Any, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
        tokenizer = processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError("no pad token id: the processor's tokenizer has neither a pad nor an eos token")
        self.processor = processor
        self.padding_side = padding_side
        self.pads = {"input_ids": pad, "labels": IGNORE_INDEX}

    def _pad(self, rows: list[list[int]], value: int, width: int) -> torch.Tensor:
        if self.padding_side == "left":
            return torch.tensor([[value] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
        return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        keys = [key for key in features[0] if key != IMAGE_KEY]
        batch = {key: self._pad([f[key] for f in features], self.pads.get(key, 0), width) for key in keys}
        batch.update(self.pixels([f.get(IMAGE_KEY) for f in features]))
        return batch

    def pixels(self, paths: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """The image processor's tensors for the batch (one list of images per sample, empty for a text-only
        one), or nothing when no sample has an image."""
        if not any(paths):
            return {}
        images = [[open_image(path)] if path else [] for path in paths]
        return dict(self.processor.image_processor(images=images, return_tensors="pt"))
