"""Harmful-Score evaluation throughput: the generation paths side by side on the same prompts, one run.

Contenders: "today" (``transformers``' generate, batch 16: the evaluation default before the prefix
engine), generate at the new default batch, and the prefix engine (shared prompt prefix computed once,
finished answers dropped). Every path's answers are compared with today's, so a speed-up that changed the
answers would show.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from vaccine.data.resolve import load_records
from vaccine.eval.generate import GenerationSettings, generate

REFERENCE = "today: generate, batch 16"


def contenders(batch_size: int) -> list[tuple[str, GenerationSettings]]:
    return [
        (REFERENCE, GenerationSettings(batch_size=16, engine="hf")),
        (f"generate, batch {batch_size}", GenerationSettings(batch_size=batch_size, engine="hf")),
        (f"prefix engine, batch {batch_size}", GenerationSettings(batch_size=batch_size, engine="prefix")),
    ]


def throughput(
    model: torch.nn.Module, tokenizer: Any, num_prompts: int, max_new_tokens: int, batch_size: int
) -> dict[str, Any]:
    """Answers per second of each contender on the first ``num_prompts`` AdvBench prompts."""
    prompts = [r.prompt for r in load_records("advbench")[:num_prompts]]
    result: dict[str, Any] = {"prompts": num_prompts, "max_new_tokens": max_new_tokens, "rows": []}
    reference: list[str] = []
    for name, settings in contenders(batch_size):
        settings.max_new_tokens = max_new_tokens
        started = time.perf_counter()
        answers = generate(model, tokenizer, prompts, settings, desc=name)
        seconds = time.perf_counter() - started
        reference = reference or answers
        result["rows"].append(
            {
                "name": name,
                "engine": settings.engine,
                "batch_size": settings.batch_size,
                "seconds": seconds,
                "answers_per_s": num_prompts / seconds,
                "same_answers": sum(a == b for a, b in zip(answers, reference, strict=True)),
            }
        )
    today, best = result["rows"][0], result["rows"][-1]
    result["speedup"] = best["answers_per_s"] / today["answers_per_s"]
    return result
