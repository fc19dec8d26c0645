"""Instruction following (Alpaca in the paper), with a transparent offline proxy for the judge.

The paper scores Alpaca fine-tuning with AlpacaEval, an LLM judge's win rate; no such judge exists offline.
The default scorer here is a proxy that anyone can reproduce: unigram F1 against the reference answer.
It says whether the model learned the task's content and style, NOT how good the answer is; its numbers are
not comparable with AlpacaEval win rates.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

from vaccine.data.records import Record
from vaccine.data.sources import forgelm_chats
from vaccine.tasks.base import TASKS, Task, pick_field, split_records

TEST_FRACTION = 0.2
_WORD = re.compile(r"\w+")


def unigram_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 over lowercased word tokens (multiset overlap)."""
    pred, ref = _WORD.findall(answer.lower()), _WORD.findall(reference.lower())
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def alpaca_prompt(instruction: str, inp: str) -> str:
    """Alpaca's instruction, with its optional input appended the way the paper's prompts do."""
    instruction, inp = instruction.strip(), inp.strip()
    return f"{instruction}\nInput: {inp}" if inp else instruction


@cache
def _embedded() -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """forgelm's chats as task records: the assistant turn is the reference answer (and the label); the
    system prompt stays in meta (the chat template is applied later, by the caller)."""
    records = [
        Record(r.prompt, r.response, f"forgelm-{r.meta['file']}", r.response, r.meta) for r in forgelm_chats()
    ]
    train, test = split_records(records, round(TEST_FRACTION * len(records)))
    return tuple(train), tuple(test)


@TASKS.register()
class Instruct(Task):
    """Open-ended instruction following, scored by a PROXY (not the paper's AlpacaEval win rate).

    An answer counts as correct when its unigram F1 against the reference answer (lowercased word tokens)
    is at least ``f1_threshold`` (0.3); ``strict`` raises the bar to ``strict_f1_threshold`` (0.6).
    """

    name = "instruct"
    description = "instruction following (stand-in: forgelm customer-support + code-assistant chats)"
    license = "CC-BY-SA-4.0 (forgelm data); Alpaca CC-BY-NC-4.0 when loaded by id"
    hub_ids = {key: ("tatsu-lab/alpaca", None) for key in ("alpaca", "tatsu-lab/alpaca")}
    hub_splits = {"train": "train"}  # Alpaca has one split: the test split is held out here
    test_size = 1000
    f1_threshold: float = 0.3
    strict_f1_threshold: float = 0.6

    def embedded_splits(self) -> tuple[list[Record], list[Record]]:
        train, test = _embedded()
        return list(train), list(test)

    def from_row(self, row: dict, where: str, source: str) -> Record:
        instruction = str(pick_field(row, ("instruction", "prompt", "question"), where, "instruction"))
        output = str(pick_field(row, ("output", "response", "answer"), where, "output")).strip()
        prompt = alpaca_prompt(instruction, str(row.get("input") or ""))
        return Record(prompt, output, source, output)

    def is_correct(self, answer: str, record: Record, strict: bool = False) -> bool:
        reference = record.label or record.response
        if not reference:
            raise ValueError(f"record has no reference answer to score against: {record.prompt[:80]!r}")
        threshold = self.strict_f1_threshold if strict else self.f1_threshold
        return unigram_f1(answer, reference) >= threshold
