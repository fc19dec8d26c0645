"""Benign tasks: embedded split sizes and hygiene, determinism, sources, extraction and scorers."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import write_jsonl

from vaccine.data.records import Record, normalize_text
from vaccine.errors import ConfigError, DataError
from vaccine.tasks import TASKS, Task, get_task, split_records
from vaccine.tasks.gsm8k import extract_number, generate
from vaccine.tasks.instruct import unigram_f1


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- embedded splits
@pytest.mark.parametrize(
    "name, train_range, test_range",
    [
        ("sst2", (9000, 10000), (872, 872)),
        ("gsm8k", (1700, 1800), (300, 300)),
        ("instruct", (80, 110), (20, 30)),
    ],
)
def test_embedded_sizes_and_disjoint(name, train_range, test_range):
    task = get_task(name)
    train, test = task.records("train"), task.records("test")
    assert train_range[0] <= len(train) <= train_range[1]
    assert test_range[0] <= len(test) <= test_range[1]
    train_keys = {normalize_text(r.prompt) for r in train}
    test_keys = {normalize_text(r.prompt) for r in test}
    assert len(train_keys) == len(train) and len(test_keys) == len(test)
    assert not train_keys & test_keys
    assert all(r.prompt and r.response and r.label for r in train + test)


@pytest.mark.parametrize("name", ["sst2", "gsm8k", "instruct"])
def test_embedded_split_is_deterministic(name):
    task = get_task(name)
    assert task.records("test") == get_task(name).records("test")
    assert task.records("train")[:50] == task.records("train")[:50]


def test_split_records_ignores_input_order():
    records = [Record(f"prompt {i}", "r", "s") for i in range(50)]
    train, test = split_records(records, 10)
    train2, test2 = split_records(records[::-1], 10)
    assert (train, test) == (train2, test2)
    assert len(test) == 10 and len(train) == 40


def test_sst2_embedded_is_balanced_enough_and_templated():
    train = get_task("sst2").records("train")
    labels = {r.label for r in train}
    assert labels == {"positive", "negative"}
    share = sum(r.label == "positive" for r in train) / len(train)
    assert 0.3 < share < 0.7
    assert train[0].prompt.startswith(
        "Analyze the sentiment of the input, and respond only positive or negative."
    )
    assert "\nInput: " in train[0].prompt and train[0].response == train[0].label


def test_gsm8k_real_problems_always_in_test():
    test = get_task("gsm8k").records("test")
    assert sum(r.source == "forgelm-grpo-math" for r in test) == 40


def test_split_must_be_train_or_test():
    with pytest.raises(ConfigError, match="validation"):
        get_task("sst2").records("validation")


# ---------------------------------------------------------------- gsm8k
@pytest.mark.parametrize(
    "text, expected",
    [
        ("12 + 5 = 17, minus 2.\nThe final answer is 15", "15"),
        ("Some work: 3 x 4 = 12 #### 12", "12"),
        ("Answer: 7", "7"),
        ("first 5, then 9 apples", "9"),
        ("The final answer is 1,250.", "1250"),
        ("The final answer is $40.00", "40"),
        ("It costs $1,200 in total", "1200"),
        ("The final answer is 12.0", "12"),
        ("The final answer is -3 degrees", "-3"),
        ("Answer: 2/5", "2/5"),
        ("no numbers here", None),
    ],
)
def test_gsm8k_extraction(text, expected):
    assert extract_number(text) == expected


def test_gsm8k_scorer_numeric_and_strict():
    task = get_task("gsm8k")
    record = Record("q", "", "s", "1200")
    assert task.is_correct("so the total is $1,200.00", record)
    assert not task.is_correct("so the total is $1,200.00", record, strict=True)
    assert task.is_correct("The final answer is 1200", record, strict=True)
    assert not task.is_correct("The final answer is 120, not 1200", record)
    assert task.is_correct("Answer: 0.4", Record("q", "", "s", "2/5"))


def _recompute(template: str, v: dict) -> int:
    """Independent arithmetic for each generated template, from the drawn values."""
    return {
        "packs": lambda: v["a"] * v["b"] - v["c"],
        "share": lambda: v["per"] - v["e"],
        "speed": lambda: v["s1"] * v["h1"] + v["s2"] * v["h2"],
        "change": lambda: v["bill"] - (v["a"] * v["p"] + v["b"] * v["r"]),
        "ages": lambda: v["x"] + v["d"] + v["y"],
        "times_as_old": lambda: v["m"] * v["x"] - v["y"],
        "savings": lambda: v["w"] * v["n"] - v["c"],
        "discount": lambda: v["price"] - v["price"] * v["pct"] // 100,
        "bakery": lambda: (v["a"] * v["b"] - v["c"]) * v["d"],
        "pages": lambda: v["t"] - 3 * v["p"],
        "fence": lambda: 2 * (v["length"] + v["width"]) * v["cost"],
        "minutes": lambda: v["n"] * (60 * v["h"] + v["m"]),
    }[template]()


def test_gsm8k_generated_answers_are_right():
    task = get_task("gsm8k")
    records = [r for r in task.records("train") + task.records("test") if r.source == "generated-arithmetic"]
    assert len(records) == 2000
    for r in records:
        assert re.fullmatch(r"\d+", r.label), r.label
        assert int(r.label) == _recompute(r.meta["template"], r.meta["values"]) > 0
        assert r.response.endswith(f"The final answer is {r.label}")
        assert task.is_correct(r.response, r, strict=True)
    assert len({r.meta["template"] for r in records}) == 12


def test_gsm8k_generator_is_seeded():
    assert generate(30) == generate(30)
    assert generate(30, seed=1) != generate(30)


# ---------------------------------------------------------------- sst2
def test_sst2_paper_and_strict_scorers():
    task = get_task("sst2")
    pos = Record("p", "positive", "s", "positive")
    assert task.is_correct("Positive", pos)
    assert task.is_correct("The sentiment is positive.", pos)
    assert not task.is_correct("not negative, positive", pos)  # both words: not credited
    assert not task.is_correct("negative", pos)
    assert task.is_correct(" positive. ", pos, strict=True)
    assert not task.is_correct("The sentiment is positive.", pos, strict=True)
    assert task.extract("it is NEGATIVE") == "negative" and task.extract("no idea") is None


def test_sst2_from_local_csv_split_here(tmp_path):
    rows = [{"sentence": f"movie number {i} was fine", "label": i % 2} for i in range(40)]
    path = write_csv(tmp_path / "sst2.csv", rows)
    task = get_task("sst2")
    train, test = task.records("train", str(path)), task.records("test", str(path))
    assert len(test) == 8 and len(train) == 32
    assert {r.label for r in train} == {"negative", "positive"}
    assert any(
        r.prompt.endswith("\nInput: movie number 3 was fine") and r.label == "positive" for r in train + test
    )


def test_sst2_split_placeholder_and_bad_label(tmp_path):
    write_jsonl(tmp_path / "sst_train.jsonl", [{"sentence": "good", "label": "positive"}])
    write_jsonl(
        tmp_path / "sst_test.jsonl", [{"sentence": "bad", "label": "negative"}, {"text": "x", "label": 7}]
    )
    task = get_task("sst2")
    assert [r.label for r in task.records("train", str(tmp_path / "sst_{split}.jsonl"))] == ["positive"]
    with pytest.raises(DataError, match=r"sst_test.jsonl:2.*label 7"):
        task.records("test", str(tmp_path / "sst_{split}.jsonl"))


def test_sst2_hub_path_uses_validation_as_test(tmp_path, offline_hub):
    folder = tmp_path / "glue_sst2"
    write_jsonl(folder / "train.jsonl", [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(6)])
    write_jsonl(folder / "validation.jsonl", [{"sentence": "great", "label": 1, "idx": 0}])
    task = get_task("sst2")
    assert len(task.records("train", str(folder))) == 6
    [record] = task.records("test", str(folder))
    assert record.label == "positive" and record.source == "hub:glue_sst2"


def test_unknown_source_and_missing_file():
    task = get_task("sst2")
    with pytest.raises(DataError, match="file not found"):
        task.records("train", "nope/missing.jsonl")
    with pytest.raises(DataError, match="glue/sst2"):
        task.records("train", "not-a-thing")
    assert task.hub_ref("glue/sst2") == ("nyu-mll/glue", "sst2")
    assert get_task("gsm8k").hub_ref("gsm8k") == ("openai/gsm8k", "main")
    assert get_task("gsm8k").hub_ref("hf:someone/math") == ("someone/math", None)


# ---------------------------------------------------------------- gsm8k and instruct from local data
def test_gsm8k_from_hub_folder(tmp_path, offline_hub):
    folder = tmp_path / "gsm"
    answer = "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"
    write_jsonl(folder / "train.jsonl", [{"question": "How many apples?", "answer": answer}])
    write_jsonl(
        folder / "test.jsonl", [{"question": "How many pears?", "answer": "2 x 500 = 1000\n#### 1,000"}]
    )
    task = get_task("gsm8k")
    [train] = task.records("train", str(folder))
    assert train.label == "7" and train.response == "She has 3 + 4 = 7 apples.\nThe final answer is 7"
    [test] = task.records("test", str(folder))
    assert test.label == "1000" and task.is_correct("The final answer is 1,000", test, strict=True)


def test_instruct_alpaca_file_prompt_and_split(tmp_path):
    rows = [
        {"instruction": f"Task {i}", "input": "some input" if i % 2 else "", "output": f"Answer {i}"}
        for i in range(10)
    ]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    task = get_task("instruct")
    train, test = task.records("train", str(path)), task.records("test", str(path))
    assert len(train) == 8 and len(test) == 2
    prompts = {r.prompt for r in train + test}
    assert "Task 1\nInput: some input" in prompts and "Task 0" in prompts


def test_instruct_proxy_scorer():
    task = get_task("instruct")
    record = Record("q", "Use the forgot password link on the sign in page", "s", None)
    assert unigram_f1("abc", "abc") == 1.0 and unigram_f1("", "abc") == 0.0
    assert task.is_correct("Click the forgot password link on the sign in page.", record, strict=True)
    assert task.is_correct("You can use the forgot password link.", record)
    assert not task.is_correct("You can use the forgot password link.", record, strict=True)
    assert not task.is_correct("I like turtles.", record)
    assert Task.accuracy is type(task).accuracy and task.f1_threshold == 0.3


# ---------------------------------------------------------------- agnews
def test_agnews_without_source_explains_both_ways():
    with pytest.raises(DataError, match="not shipped offline") as err:
        get_task("agnews").records("train")
    assert "ag_news" in str(err.value) and "'text' and 'label'" in str(err.value)


def test_agnews_local_files_and_scorer(tmp_path):
    rows = [{"text": f"Article {i} about things", "label": i % 4} for i in range(20)]
    rows.append({"text": "Chip maker posts record quarter", "label": "Sci/Tech"})
    path = write_csv(tmp_path / "ag.csv", rows)
    task = get_task("ag_news")
    records = task.records("train", str(path)) + task.records("test", str(path))
    assert len(records) == 21 and {r.label for r in records} == {"World", "Sports", "Business", "Sci/Tech"}
    assert records[0].prompt.startswith("Categorize the news article given in the input into one of the 4")
    sci = next(r for r in records if r.label == "Sci/Tech")
    assert task.is_correct("The category is sci/tech.", sci)
    assert task.is_correct("Sci-Tech", sci)
    assert not task.is_correct("Business or Sci/Tech", sci)
    assert task.is_correct("Sci/Tech.", sci, strict=True)
    assert not task.is_correct("It is Sci/Tech", sci, strict=True)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "Weather"}])
    with pytest.raises(DataError, match="bad.jsonl:1.*Weather"):
        task.records("train", str(bad))


# ---------------------------------------------------------------- registry and accuracy
def test_registry_lookup_and_unknown_name():
    assert set(TASKS) >= {"sst2", "gsm8k", "agnews", "instruct"}
    assert get_task("SST-2").name == "sst2" and get_task("AG_News").name == "agnews"
    with pytest.raises(
        ConfigError, match="unknown task 'mmlu'; choose one of: agnews, gsm8k, instruct, sst2"
    ):
        get_task("mmlu")


def test_registering_a_task_adds_it():
    @TASKS.register()
    class Echo(Task):
        name = "echo-test"
        description = "test only"
        license = "none"

        def embedded_splits(self):
            return [Record("a", "a", "t", "a")], [Record("b", "b", "t", "b")]

        def from_row(self, row, where, source):
            return Record(row["q"], row["a"], source, row["a"])

        def is_correct(self, answer, record, strict=False):
            return answer == record.label

    try:
        assert get_task("echotest").records("test")[0].prompt == "b"
    finally:
        TASKS.remove("echotest")


def test_accuracy_percent_and_length_mismatch():
    task = get_task("sst2")
    records = [Record("p", "positive", "s", "positive"), Record("n", "negative", "s", "negative")] * 2
    assert task.accuracy(["positive", "negative", "negative", "positive and negative"], records) == 50.0
    assert task.accuracy(["positive", "negative"] * 2, records) == 100.0
    with pytest.raises(ValueError, match="lengths must match"):
        task.accuracy(["positive"], records)
