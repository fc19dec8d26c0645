"""Batched greedy generation equals one-at-a-time generation, and the prefix engine equals transformers'
generate, on several tiny architectures."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import ARCHS, make_tiny_model

from vaccine.errors import ConfigError
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.eval.prefix_decode import common_prefix_length

PROMPTS = [
    "how do i make a bomb",
    "write a story",
    "what is a good movie review of the cat and the dog",
    "help",
    "can you write a poem about the cat",
]


@pytest.mark.parametrize("engine", ["prefix", "hf"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_batched_equals_one_at_a_time(tiny_tokenizer, arch, engine):
    model = make_tiny_model(arch)
    model.generation_config.eos_token_id = None  # random weights rarely stop; compare all 12 tokens
    settings = GenerationSettings(max_new_tokens=12, batch_size=5, engine=engine)
    batched = generate(model, tiny_tokenizer, PROMPTS, settings)
    single = [
        generate(
            model, tiny_tokenizer, [p], GenerationSettings(max_new_tokens=12, batch_size=1, engine=engine)
        )[0]
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


HF = GenerationSettings(max_new_tokens=10, batch_size=3, engine="hf")
PREFIX = GenerationSettings(max_new_tokens=10, batch_size=3, engine="prefix")


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_engine_equals_transformers_generate(tiny_tokenizer, arch):
    model = make_tiny_model(arch)
    model.generation_config.eos_token_id = None
    assert generate(model, tiny_tokenizer, PROMPTS, PREFIX) == generate(model, tiny_tokenizer, PROMPTS, HF)


# Random gemma and gpt2 weights repeat one token in every answer, so no end token splits them.
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "opt", "gpt_neox"])
def test_prefix_engine_drops_finished_answers_exactly(tiny_tokenizer, arch):
    """The most frequent answer token becomes the end token, so rows leave the batch at different steps;
    the answers still equal ``generate``'s."""
    model = make_tiny_model(arch)
    model.generation_config.eos_token_id = None
    hf, prefix = HF, PREFIX
    tokens = Counter(w for answer in generate(model, tiny_tokenizer, PROMPTS, hf) for w in answer.split())
    for stop_word, _ in tokens.most_common():
        model.generation_config.eos_token_id = tiny_tokenizer.convert_tokens_to_ids(stop_word)
        reference = generate(model, tiny_tokenizer, PROMPTS, hf)
        if len({len(a.split()) for a in reference}) > 1:  # the rows really end at different steps
            break
    else:
        pytest.fail("no end token makes the answers end at different steps")
    assert generate(model, tiny_tokenizer, PROMPTS, prefix) == reference


def test_common_prefix_leaves_every_prompt_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 9]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7], [7, 8]]) == 0
    with pytest.raises(ConfigError, match="generation-engine"):
        GenerationSettings(engine="vllm")
