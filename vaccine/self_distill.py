"""Helpful alignment data: benign prompts answered by the model being aligned (self-distillation).

A refusal-only alignment set teaches a small model to refuse everything (measured in
docs/results/investigation.md: HS 0 and SST-2 accuracy 0 before any attack). Mixing in benign prompts keeps
it helpful; answering them with the base model's own greedy answers means the alignment only changes what
it must (the refusals), not the model's voice on everything else. The answers are cached by prompt in a
file (the run folder's, or one a grid shares between its alignments of the same model: greedy answers of
the same base model do not depend on the method or the seed), so a resumed alignment trains on the same
data and a second alignment does not generate them again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaccine.data.records import Record
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.io import write_text_atomic

CACHE_FILE = "self_distilled.jsonl"


def self_distill(
    model: Any, tokenizer: Any, records: list[Record], settings: GenerationSettings, cache: Path
) -> list[Record]:
    """``records`` with each empty answer replaced by the model's greedy answer (cached in ``cache``)."""
    missing = [r.prompt for r in records if not r.response.strip()]
    answers = _cached_answers(cache)
    todo = [p for p in dict.fromkeys(missing) if p not in answers]
    if todo:
        new = generate(model, tokenizer, todo, settings, desc="self-distillation")
        answers.update(zip(todo, new, strict=True))
        rows = (json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in answers.items())
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, "".join(rows))
    return [
        r
        if r.response.strip()
        else Record(r.prompt, answers[r.prompt], r.source, r.label, {**r.meta, "answer": "self-distilled"})
        for r in records
    ]


def _cached_answers(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {row["prompt"]: row["answer"] for row in rows}
