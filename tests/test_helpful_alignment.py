"""Helpful alignment data and over-refusal: the benign splits are clean, self-distillation fills answers with
the model's own greedy answers (cached), alignment mixes them in by share, and `vaccine evaluate` reports
the benign refusal rate; prompt lists as plain text work wherever prompts do."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_model, make_tiny_tokenizer, write_jsonl

from vaccine import self_distill as self_distill_module
from vaccine.cli import main
from vaccine.data.records import Record, normalize_text
from vaccine.data.resolve import load_records
from vaccine.data.splits import (
    _SOUNDS_SENSITIVE,
    BENIGN_TRAINING_SIZE,
    OPINION_INSTRUCTIONS,
    OPINION_SHARE,
    SPLITS,
    TASK_SHAPED_INSTRUCTIONS,
    benign_eval_split,
    benign_split,
)
from vaccine.errors import DataError
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.self_distill import self_distill
from vaccine.tasks import get_task
from vaccine.tasks.sst2 import TEMPLATE as SST2_TEMPLATE


def _keys(records):
    return {normalize_text(r.prompt) for r in records}


def test_benign_splits_are_disjoint_from_each_other_and_from_harm():
    train, held = benign_split(), benign_eval_split()
    assert len(train) == BENIGN_TRAINING_SIZE and 150 < len(held) < 300
    assert _keys(train).isdisjoint(_keys(held))
    for name in ("advbench", "harmbench", "harmful", "alignment", "do-not-answer"):
        assert _keys(train + held).isdisjoint(_keys(SPLITS[name].loader())), name
    assert all(r.label == "benign" and not r.response for r in train + held)
    sounds_harmful = [r for r in held if any(w in r.prompt.lower() for w in ("kill", "bomb", "drug", "war"))]
    assert len(sounds_harmful) > 40  # the over-refusal probes: benign questions that sound sensitive
    assert {r.source for r in held} == {"trec", "pyrit-benign"}


def test_benign_training_prompts_include_task_shaped_sensitive_and_opinionated_ones():
    """Instruction-with-input prompts (the fine-tuning tasks' form) over questions and over opinionated
    snippets, and benign questions that sound sensitive, so that alignment does not teach "refuse every
    instruction", "refuse every sensitive word" or "refuse every harsh review"; all stay apart from the
    over-refusal probes, and no task's own instruction or text is among them."""
    train = benign_split()
    trec = [r for r in train if r.source == "trec"]
    shaped = [r for r in trec if "instruction" in r.meta]
    assert 0.18 < len(shaped) / len(trec) < 0.32
    assert {r.meta["instruction"] for r in shaped} == set(range(len(TASK_SHAPED_INSTRUCTIONS)))
    contrast = [r for r in train if _SOUNDS_SENSITIVE.search(r.prompt) or r.source == "pyrit-benign"]
    assert 0.15 < len(contrast) / len(train) < 0.3  # sensitive-sounding benign prompts, trained on
    opinions = [r for r in train if r.source in ("amazonReview", "nytEditorial")]
    assert len(opinions) == round(OPINION_SHARE * len(train))
    assert {r.prompt.split("\n")[0] for r in opinions} == set(OPINION_INSTRUCTIONS)
    inputs = {normalize_text(r.prompt.split("\nInput: ", 1)[1]) for r in shaped + opinions}
    assert len(inputs) == len(shaped + opinions) and inputs.isdisjoint(_keys(benign_eval_split()))
    sst2_train, sst2_test = get_task("sst2").embedded_splits()
    sst2_texts = {normalize_text(r.prompt.split("\nInput: ", 1)[-1]) for r in sst2_train + sst2_test}
    assert inputs.isdisjoint(sst2_texts)
    assert not any(r.prompt.startswith(SST2_TEMPLATE.split("\n")[0]) for r in train)


def test_self_distill_fills_empty_answers_once(tiny_tokenizer, tmp_path, monkeypatch):
    model = make_tiny_model("llama")
    records = [
        Record("how do i make a story", "", "t", "benign"),
        Record("write a poem", "kept", "t", "benign"),
    ]
    settings = GenerationSettings(max_new_tokens=5, batch_size=2)
    filled = self_distill(model, tiny_tokenizer, records, settings, tmp_path / "answers.jsonl")
    assert filled[0].response == generate(model, tiny_tokenizer, ["how do i make a story"], settings)[0]
    assert filled[0].meta["answer"] == "self-distilled" and filled[1].response == "kept"

    def no_generation(*args, **kwargs):
        raise AssertionError("answers are cached by prompt")

    monkeypatch.setattr(self_distill_module, "generate", no_generation)
    assert self_distill(model, tiny_tokenizer, records, settings, tmp_path / "answers.jsonl") == filled


def test_a_teacher_answers_instead_of_the_model_in_its_own_chat_template(tiny_model_dir, tmp_path):
    """For a base model, whose own answers echo the prompt, another model answers; it is loaded only when
    an answer is missing from the cache."""
    from vaccine.models import load_model_and_tokenizer

    student, tokenizer = make_tiny_model("qwen2"), make_tiny_tokenizer()
    records = [Record("write a poem about the sea", "", "t", "benign")]
    settings = GenerationSettings(max_new_tokens=6, batch_size=1, template="chat")
    cache = tmp_path / "answers.jsonl"
    filled = self_distill(student, tokenizer, records, settings, cache, teacher=str(tiny_model_dir))
    teacher, teacher_tokenizer = load_model_and_tokenizer(str(tiny_model_dir), dtype="float32")
    assert filled[0].response == generate(teacher, teacher_tokenizer, [records[0].prompt], settings)[0]
    assert filled[0].response != generate(student, tokenizer, [records[0].prompt], settings)[0]
    assert filled[0].meta["answer"] == f"distilled from {tiny_model_dir}"
    assert self_distill(student, tokenizer, records, settings, cache, teacher="no/such-model") == filled


def test_align_with_a_helpful_share(tiny_model_dir, tmp_path):
    safety = write_jsonl(
        tmp_path / "align.jsonl",
        [{"prompt": f"how do i make a bomb {i}", "response": "no sorry"} for i in range(8)],
    )
    benign = tmp_path / "benign.txt"
    benign.write_text("\n".join(f"write a story about a cat {i}" for i in range(8)) + "\n", encoding="utf-8")
    out = tmp_path / "aligned"
    argv = ["align", "--method", "sft", "--model", str(tiny_model_dir), "--data", str(safety),
            "--num-samples", "8", "--helpful-data", str(benign), "--helpful-share", "0.25",
            "--self-distill-tokens", "4", "--max-steps", "2", "--batch-size", "4",
            "--lora-targets", "q_proj,v_proj", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    distilled = [json.loads(line) for line in (out / "self_distilled.jsonl").read_text().splitlines()]
    assert len(distilled) == 2 and all(r["prompt"].startswith("write a story") for r in distilled)
    config = json.loads((out / "config.json").read_text())
    assert config["helpful_share"] == 0.25 and config["helpful_data"] == str(benign)
    assert json.loads((out / "summary.json").read_text())["samples"] == 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--helpful-share", "1.5", "--helpful-data", "benign", "--num-samples", "8"], "--helpful-share"),
        (["--helpful-share", "0.5", "--num-samples", "8"], "needs helpful_data"),
    ],
)
def test_bad_helpful_flags_are_named(tiny_model_dir, tmp_path, capsys, flags, message):
    argv = ["align", "--method", "sft", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_evaluate_reports_the_benign_refusal_rate(tiny_model_dir, tmp_path):
    prompts = tmp_path / "harmful.txt"
    prompts.write_text("how do i hack the dog\n\nhow do i steal a cat\n", encoding="utf-8")
    benign = write_jsonl(
        tmp_path / "benign.jsonl", [{"prompt": f"write a poem about a cat {i}"} for i in range(5)]
    )
    out = tmp_path / "result.json"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--harmful-prompts", str(prompts), "--task", "none",
            "--judge", "refusal", "--max-new-tokens", "4", "--benign-prompts", str(benign),
            "--num-benign", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["num_harmful"] == 2  # a .txt prompt list, blank line skipped
    rate, (low, high) = result["metrics"]["benign_refusal_rate"], result["metrics"]["benign_refusal_rate_ci"]
    assert len(result["records"]["benign"]) == 5 and low <= rate <= high
    assert rate == pytest.approx(100 * sum(r["refused"] for r in result["records"]["benign"]) / 5)


def test_prompt_lists_as_plain_text(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n  \nsecond prompt\n", encoding="utf-8")
    assert [r.prompt for r in load_records(str(path))] == ["first prompt", "second prompt"]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="blank.txt: file is empty"):
        load_records(str(tmp_path / "blank.txt"))
