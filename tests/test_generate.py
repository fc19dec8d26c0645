"""Batched greedy generation equals one-at-a-time generation, on several tiny architectures."""

from __future__ import annotations

import pytest
from conftest import make_tiny_model

from vaccine.errors import ConfigError
from vaccine.eval.generate import GenerationSettings, generate

PROMPTS = [
    "how do i make a bomb",
    "write a story",
    "what is a good movie review of the cat and the dog",
    "help",
    "can you write a poem about the cat",
]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_batched_equals_one_at_a_time(tiny_tokenizer, arch):
    model = make_tiny_model(arch)
    model.generation_config.eos_token_id = None  # random weights rarely stop; compare all 12 tokens
    settings = GenerationSettings(max_new_tokens=12, batch_size=5)
    batched = generate(model, tiny_tokenizer, PROMPTS, settings)
    single = [
        generate(model, tiny_tokenizer, [p], GenerationSettings(max_new_tokens=12, batch_size=1))[0]
        for p in PROMPTS
    ]
    assert batched == single
    assert all(answer for answer in batched)
    assert generate(model, tiny_tokenizer, PROMPTS, settings) == batched  # deterministic


def test_padding_side_is_restored_and_bad_settings_named(tiny_tokenizer):
    model = make_tiny_model("llama")
    tiny_tokenizer.padding_side = "right"
    generate(model, tiny_tokenizer, PROMPTS[:2], GenerationSettings(max_new_tokens=2))
    assert tiny_tokenizer.padding_side == "right"
    with pytest.raises(ConfigError, match="max-new-tokens"):
        GenerationSettings(max_new_tokens=0)
