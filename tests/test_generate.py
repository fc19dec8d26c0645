"""Batched greedy generation equals one-at-a-time generation, and the prefix engine equals transformers'
generate, on several tiny architectures."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import ARCHS, make_tiny_model, make_tiny_tokenizer
from transformers.cache_utils import DynamicLayer

from vaccine.errors import ConfigError
from vaccine.eval.generate import GenerationSettings, equal_batches, generate
from vaccine.eval.prefix_decode import ReservedLayer, common_prefix_length, reserved_cache

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
    with pytest.raises(ConfigError, match="max_new_tokens"):
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
    with pytest.raises(ConfigError, match="engine"):
        GenerationSettings(engine="vllm")


def test_reserved_layer_holds_what_the_dynamic_layer_holds():
    """Writing in place (and growing past the reservation) keeps exactly the concatenated keys and values,
    through batch repeat and batch selection."""
    torch.manual_seed(0)
    reserved, dynamic = ReservedLayer(reserve=3), DynamicLayer()
    chunks = [torch.randn(1, 2, length, 4) for length in (2, 1, 3)]
    for step, chunk in enumerate(chunks):
        if step == 1:
            reserved.batch_repeat_interleave(3)
            dynamic.batch_repeat_interleave(3)
        chunk = chunk.expand(3 if step else 1, -1, -1, -1)
        got, want = reserved.update(chunk, -chunk), dynamic.update(chunk, -chunk)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    keep = torch.tensor([0, 2])
    reserved.batch_select_indices(keep)
    dynamic.batch_select_indices(keep)
    assert torch.equal(reserved.keys, dynamic.keys) and torch.equal(reserved.values, dynamic.values)
    assert reserved.get_seq_length() == 6


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_reserved_cache_replaces_only_full_attention_layers(arch):
    model = make_tiny_model(arch)
    kinds = {type(layer).__name__ for layer in reserved_cache(model, 8).layers}
    assert kinds == ({"DynamicSlidingWindowLayer"} if arch == "mistral" else {"ReservedLayer"})


def test_equal_batches_cover_the_order_in_nearly_equal_parts():
    assert [len(b) for b in equal_batches(list(range(520)), 128)] == [104] * 5
    batches = equal_batches(list(range(7)), 3)
    assert [i for b in batches for i in b] == list(range(7)) and {len(b) for b in batches} == {2, 3}
    assert equal_batches([], 4) == []


@pytest.mark.parametrize("engine", ["prefix", "hf"])
def test_generation_reads_the_prompt_ids_that_training_reads(engine):
    """A tokenizer that adds BOS (Gemma's, Llama-2's) gets it in generation as in training: answering
    without the BOS it was trained with, Gemma echoed the prompt or stopped after one word."""
    from tokenizers.processors import TemplateProcessing

    from vaccine.answer_loss import IGNORE_INDEX
    from vaccine.data.records import Record
    from vaccine.data.tokenize import encode_record

    tokenizer = make_tiny_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    record = Record("how do i make a story", "sure", "t", "benign")
    trained = encode_record(tokenizer, record, "alpaca")
    prompt = [
        t for t, label in zip(trained["input_ids"], trained["labels"], strict=True) if label == IGNORE_INDEX
    ]
    assert prompt[0] == bos
    model, seen = make_tiny_model("llama"), []
    model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"][0]), with_kwargs=True
    )
    settings = GenerationSettings(max_new_tokens=2, batch_size=1, template="alpaca", engine=engine)
    generate(model, tokenizer, [record.prompt], settings)
    assert torch.cat(seen).tolist()[: len(prompt)] == prompt
