"""How answers are generated (greedy always), and the batching every generation engine shares.

Kept apart from the engines (:mod:`vaccine.eval.generate` for text, :mod:`vaccine.eval.generate_images` for
image+text prompts) so that both import it and neither imports the other's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from vaccine.errors import SettingError

ENGINES = ("prefix", "hf")


@dataclass
class GenerationSettings:
    """How answers are generated (greedy always)."""

    max_new_tokens: int = field(
        default=128, metadata={"help": "answer length for harmful prompts, in tokens"}
    )
    batch_size: int = field(default=128, metadata={"help": "prompts per generation batch"})
    template: str = field(default="chat", metadata={"help": "prompt format"})
    engine: str = field(
        default="prefix",
        metadata={
            "help": "prefix: shared prompt prefix computed once, finished answers dropped (same answers, "
            "faster); hf: transformers' generate",
            "choices": ENGINES,
        },
    )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SettingError("max_new_tokens", f"must be >= 1; got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise SettingError("batch_size", f"must be >= 1; got {self.batch_size}")
        if self.engine not in ENGINES:
            raise SettingError("engine", f"must be one of {', '.join(ENGINES)}; got {self.engine!r}")


def equal_batches(order: Sequence[int], batch_size: int) -> list[Sequence[int]]:
    """``order`` cut into the fewest batches of at most ``batch_size``, all of nearly equal size: 520 prompts
    at 128 run as 5 x 104, not 4 x 128 + 8 (a small last batch wastes a whole pass over the weights)."""
    if not order:
        return []
    count = -(-len(order) // batch_size)
    bounds = [round(i * len(order) / count) for i in range(count + 1)]
    return [order[start:end] for start, end in pairwise(bounds)]


def greedy_answers(
    model: Any, tokenizer: Any, batch: dict[str, Any], max_new_tokens: int, pad_id: int
) -> list[str]:
    """transformers' greedy ``generate`` with the KV cache on one left-padded batch: each row's new text."""
    output = model.generate(
        **batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id, use_cache=True
    )
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]
