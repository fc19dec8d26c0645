"""Harmful-Score evaluation throughput: batched greedy generation against one prompt at a time."""

from __future__ import annotations

import time
from typing import Any

import torch

from vaccine.data.sources import load_records
from vaccine.eval.generate import GenerationSettings, generate


def throughput(
    model: torch.nn.Module, tokenizer: Any, num_prompts: int, max_new_tokens: int, batch_size: int
) -> dict[str, Any]:
    """Answers per second on the first ``num_prompts`` AdvBench prompts, batched and one at a time."""
    prompts = [r.prompt for r in load_records("advbench")[:num_prompts]]
    result: dict[str, Any] = {"prompts": num_prompts, "max_new_tokens": max_new_tokens}
    answers = {}
    for name, size in (("batched", batch_size), ("one_at_a_time", 1)):
        settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=size)
        started = time.perf_counter()
        answers[name] = generate(model, tokenizer, prompts, settings, desc=f"generate ({name})")
        seconds = time.perf_counter() - started
        result[name] = {"batch_size": size, "seconds": seconds, "answers_per_s": num_prompts / seconds}
    result["speedup"] = result["batched"]["answers_per_s"] / result["one_at_a_time"]["answers_per_s"]
    pairs = zip(answers["batched"], answers["one_at_a_time"], strict=True)
    result["same_answers"] = sum(a == b for a, b in pairs)
    return result
