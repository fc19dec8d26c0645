"""Helpful alignment data: benign prompts answered by the model being aligned (self-distillation).

A refusal-only alignment set teaches a small model to refuse everything (measured in
docs/results/investigation.md: HS 0 and SST-2 accuracy 0 before any attack). Mixing in benign prompts keeps
it helpful; answering them with the base model's own greedy answers means the alignment only changes what
it must (the refusals), not the model's voice on everything else. The answers are cached by prompt in a
file (the run folder's, or one a grid shares between its alignments of the same model: greedy answers of
the same base model do not depend on the method or the seed), so a resumed alignment trains on the same
data and a second alignment does not generate them again.

A base model answers instructions badly: Gemma 3 270M base, prompted in Alpaca's format, answers and then
writes new "### Instruction/Response" turns of its own (it was never taught to stop; docs/results/gemma.md),
and an alignment on such answers teaches it to ramble. ``helpful_teacher`` names an instruction-tuned model
that answers instead, in its own chat template (as the paper's BeaverTails answers came from another model,
Alpaca-7B).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaccine.data.records import Record, sample_of
from vaccine.data.resolve import load_records
from vaccine.errors import DataError
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.io import write_text_atomic
from vaccine.models import load_model_and_tokenizer
from vaccine.settings import require, setting

CACHE_FILE = "self_distilled.jsonl"


@dataclass(kw_only=True)
class AlignmentMix:
    """Which safety pairs a stage trains on, and how many self-distilled helpful pairs join them: the
    alignment stage's data, and the post-hoc safety fine-tune's."""

    data: str = setting("alignment", "safety data: a built-in split, a local .json/.jsonl/.csv, or hf:ID")
    num_samples: int | None = setting(None, "a seeded random subset of the data (default: all of it)")
    helpful_data: str | None = setting(
        None, "benign prompts mixed into the alignment data (e.g. 'benign'); the model answers them itself"
    )
    helpful_share: float = setting(0.0, "share of num_samples that is helpful")
    self_distill_tokens: int = setting(96, "length of the self-distilled answers")
    helpful_teacher: str | None = setting(
        None,
        "a model that answers the helpful prompts instead of the model being aligned, in its own chat "
        "template (e.g. the embedded instruct model, for a base model, which does not stop after its answer)",
    )

    def __post_init__(self) -> None:
        require(
            self.num_samples is None or self.num_samples >= 1,
            "num_samples",
            f"must be >= 1; got {self.num_samples}",
        )
        require(
            0.0 <= self.helpful_share < 1.0, "helpful_share", f"must be in [0, 1); got {self.helpful_share}"
        )
        require(
            self.helpful_share == 0 or (self.helpful_data is not None and self.num_samples is not None),
            "helpful_share",
            "> 0 needs helpful_data and num_samples",
        )
        require(
            self.self_distill_tokens >= 1,
            "self_distill_tokens",
            f"must be >= 1; got {self.self_distill_tokens}",
        )


def alignment_records(
    mix: AlignmentMix, model: Any, tokenizer: Any, *, template: str, seed: int, cache: Path
) -> list[Record]:
    """The safety pairs, plus (with ``helpful_share``) benign prompts answered by ``model`` itself,
    shuffled together: round(num_samples * helpful_share) helpful pairs, the rest safety pairs."""
    helpful_count = round((mix.num_samples or 0) * mix.helpful_share)
    safety_count = None if mix.num_samples is None else mix.num_samples - helpful_count
    records = sample_of(load_records(mix.data), safety_count, seed, "num_samples", mix.data)
    if helpful_count == 0:
        return records
    helpful = sample_of(load_records(mix.helpful_data), helpful_count, seed, "num_samples", mix.helpful_data)
    answer_template = template if mix.helpful_teacher is None else "chat"  # a teacher answers in its own
    settings = GenerationSettings(mix.self_distill_tokens, batch_size=32, template=answer_template)
    mixed = records + self_distill(model, tokenizer, helpful, settings, cache, teacher=mix.helpful_teacher)
    random.Random(seed).shuffle(mixed)
    return mixed


def self_distill(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    settings: GenerationSettings,
    cache: Path,
    teacher: str | None = None,
) -> list[Record]:
    """``records`` with each empty answer replaced by the model's greedy answer (cached in ``cache``), or by
    ``teacher``'s, a model loaded only when some answer is not cached yet."""
    unanswered_image = next((r for r in records if r.image is not None and not r.response.strip()), None)
    if unanswered_image is not None:
        raise DataError(
            f"{unanswered_image.meta.get('where') or repr(unanswered_image.prompt[:60])}: a helpful prompt "
            "with an image needs its answer in the data (self-distillation answers text prompts only)"
        )
    missing = [r.prompt for r in records if not r.response.strip()]
    answers = _cached_answers(cache)
    todo = [p for p in dict.fromkeys(missing) if p not in answers]
    if todo:
        if teacher is not None:
            model, tokenizer = load_model_and_tokenizer(teacher, dtype="float32")
        new = generate(model, tokenizer, todo, settings, desc="self-distillation")
        answers.update(zip(todo, new, strict=True))
        rows = (json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in answers.items())
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, "".join(rows))
    answered_by = "self-distilled" if teacher is None else f"distilled from {teacher}"
    return [
        r
        if r.response.strip()
        else Record(r.prompt, answers[r.prompt], r.source, r.label, {**r.meta, "answer": answered_by})
        for r in records
    ]


def _cached_answers(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {row["prompt"]: row["answer"] for row in rows}
