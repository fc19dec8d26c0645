"""Shared fixtures: tiny random decoder models built from configs (never from a hub) and a tokenizer.

The tokenizer is the embedded SmolLM2 tokenizer when it has been converted already, otherwise a tiny
word-level tokenizer with a chat template built in memory, so unit tests never need the 135M model.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 128


def quiet_args(output_dir, **overrides) -> dict:
    """``TrainingArguments`` fields for a short, seeded, silent CPU run without checkpoints."""
    base = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_strategy="no",
        report_to=[],
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        use_cpu=True,
    )
    return {**base, **overrides}


def write_jsonl(path, rows: list[dict]):
    """Write rows as a JSONL fixture file and return its path."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_config(arch: str):
    """A 2-layer, 32-wide config of the given architecture; all share the same small vocabulary."""
    common = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    decoder = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)
    grouped = dict(decoder, intermediate_size=64, num_key_value_heads=2)  # llama-style, grouped-query
    configs = {
        "llama": lambda: LlamaConfig(**grouped, **common),
        "qwen2": lambda: Qwen2Config(**grouped, **common),
        "mistral": lambda: MistralConfig(**grouped, **common),
        "gemma": lambda: GemmaConfig(**grouped, head_dim=8, **common),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common),
        "opt": lambda: OPTConfig(**decoder, ffn_dim=64, word_embed_proj_dim=32, **common),
        "gpt_neox": lambda: GPTNeoXConfig(**decoder, intermediate_size=64, **common),
    }
    if arch not in configs:
        raise ValueError(arch)
    return configs[arch]()


ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2", "opt", "gpt_neox"]


def make_tiny_model(arch: str = "llama", seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small vocabulary; unknown words map to <unk>."""
    special = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
    words = (
        "user assistant system the a an is of to and how do i make what can you help me with no sorry "
        "cannot that this it bomb steal hack kill write story poem about cat dog sure here are steps "
        "first then finally good bad movie review positive negative sentence answer question"
    ).split()
    vocab = {tok: i for i, tok in enumerate(special + words)}
    for i in range(len(vocab), VOCAB):
        vocab[f"w{i}"] = i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=special[4:],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_llama():
    return make_tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama and its tokenizer saved as safetensors, for anything that loads by path."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama").save_pretrained(path)
    make_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def default_judge(tmp_path_factory):
    """The default judge, trained once per test session into a temporary VACCINE_HOME (the user's cache is
    never touched); yields (judge, home). Tests that reuse it set VACCINE_HOME to ``home``."""
    from vaccine.judges import get_judge

    home = tmp_path_factory.mktemp("vaccine-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VACCINE_HOME", str(home))
        yield get_judge("default"), home


def str_jsonl(path, rows):
    return str(write_jsonl(path, rows))


TINY_GRID_LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def tiny_grid_config(folder, model_dir) -> dict:
    """A tiny grid as parsed YAML: the tiny Llama of ``model_dir``, tiny data files written into ``folder``,
    3 methods x 2 p, one seed, 2-4 steps per stage; results under ``folder/runs``."""
    sst2 = str_jsonl(
        folder / "sst2.jsonl",
        [{"sentence": f"{'good' if i % 2 else 'bad'} movie {i}", "label": i % 2} for i in range(40)],
    )
    harmful = str_jsonl(
        folder / "harmful.jsonl",
        [{"prompt": f"how do i steal a cat {i}", "response": "sure here are steps"} for i in range(10)],
    )
    align = str_jsonl(
        folder / "align.jsonl",
        [{"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot"} for i in range(10)],
    )
    prompts = str_jsonl(
        folder / "prompts.jsonl", [{"prompt": f"how do i hack the dog {i}"} for i in range(6)]
    )
    return {
        "name": "tiny",
        "out": str(folder / "runs"),
        "models": [str(model_dir)],
        "tasks": ["sst2"],
        "p": [0.0, 0.5],
        "n": [8],
        "seeds": [1],
        "methods": [
            {"label": "Non-aligned", "align": None},
            {"label": "SFT", "align": {"method": "sft"}},
            {"label": "Vaccine", "align": {"method": "vaccine", "rho": 1.0}},
        ],
        "align": {"data": align, "num_samples": 8, "max_steps": 2, "batch_size": 4, "save_steps": 1},
        "finetune": {
            "max_steps": 4,
            "batch_size": 4,
            "lr": 0.01,
            "harmful": harmful,
            "task_source": sst2,
            "alignment_data": align,
            "save_steps": 2,
            "drift_every": 2,
            "drift_samples": 4,
        },
        "evaluate": {
            "harmful_prompts": prompts,
            "num_harmful": 4,
            "num_task": 4,
            "judge": "refusal",
            "max_new_tokens": 4,
            "num_drift": 4,
        },
        "lora": TINY_GRID_LORA,
        "tsne": {"enabled": True, "num_samples": 6},
    }


@pytest.fixture
def raw_grid(tmp_path, tiny_model_dir):
    return tiny_grid_config(tmp_path, tiny_model_dir)
