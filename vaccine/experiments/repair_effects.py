"""What a post-hoc repair bought and what it cost, beside the attacked model it repaired.

A repaired method's cells and its base method's cells come from the same attack (the grid runs the attack
once and repairs its folder: the two rows share ``config.finetune.out``), so they pair seed by seed and
prompt by prompt. The provider pays the repair on every fine-tune, so its price sits beside its gain in
one table: HS and task accuracy after the attack and after the repair with the paired change in each, the
over-refusal before and after, and the repair's wall time. The comparisons tables set each method against
the references only, so a repair's own effect shows there only when its base method is a reference, and
never beside its price.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaccine import stats
from vaccine.experiments.comparisons import by_cell, paired_outcomes, paired_task_outcomes
from vaccine.experiments.render import MISSING, Block, Table, TableCell


@dataclass(frozen=True)
class RepairPair:
    """``repaired`` (a method with a post-hoc stage) repairs the attacked model of ``attacked``."""

    repaired: str
    attacked: str


def _attack(row: dict[str, Any]) -> str | None:
    """The attack's run folder: the same folder means the same attacked model."""
    return ((row.get("config") or {}).get("finetune") or {}).get("out")


def repair_pairs(rows: list[dict[str, Any]]) -> list[RepairPair]:
    """Each repaired method with the unrepaired method whose attack it repaired, found through the rows'
    shared attack folder; rows without a recorded attack folder pair with nothing."""
    cells = by_cell(rows).items()
    seeded = [(p, seed, row) for (_, p), seed_rows in cells for seed, row in seed_rows.items()]
    attacked = {
        (_attack(row), p, seed): row["label"]
        for p, seed, row in seeded
        if not row.get("posthoc_method") and _attack(row)
    }
    found: dict[RepairPair, None] = {}
    for p, seed, row in seeded:
        base = attacked.get((_attack(row), p, seed)) if row.get("posthoc_method") else None
        if base is not None:
            found[RepairPair(row["label"], base)] = None
    return list(found)


def _change(paired: tuple[np.ndarray, np.ndarray] | None) -> tuple[str, str, str]:
    """(after the attack, after the repair, the repair's change with interval and verdict), in %."""
    if paired is None:
        return MISSING, MISSING, MISSING
    before, after = paired
    result = stats.compare(after, before)
    change = f"{result.difference:+.1f} [{result.low:+.1f}, {result.high:+.1f}] {result.verdict}"
    return f"{100 * before.mean():.1f}", f"{100 * after.mean():.1f}", change


def _refusal(row: dict[str, Any]) -> float | None:
    return row["metrics"].get("benign_refusal_rate")


def _repair_seconds(row: dict[str, Any]) -> float | None:
    return (row.get("cost") or {}).get("posthoc_time_s")


def _refusals(attacked: dict[int, dict], repaired: dict[int, dict]) -> str:
    """Over-refusal after the attack -> after the repair (% of held-out benign prompts, mean over seeds),
    with the paired t interval of the change when two or more seeds have both."""
    common = sorted(set(attacked) & set(repaired))
    seeds = [s for s in common if _refusal(attacked[s]) is not None and _refusal(repaired[s]) is not None]
    if not seeds:
        return MISSING
    before = [float(_refusal(attacked[s])) for s in seeds]
    after = [float(_refusal(repaired[s])) for s in seeds]
    text = f"{statistics.fmean(before):.1f} → {statistics.fmean(after):.1f}"
    result = stats.compare_over_seeds(after, before)
    if result is None or not np.isfinite(result.low):
        return text
    return f"{text} ({result.difference:+.1f} [{result.low:+.1f}, {result.high:+.1f}])"


def repair_table(rows: list[dict[str, Any]]) -> Table | None:
    """One line per repair and p: HS and FA after the attack and after the repair, the paired changes, the
    over-refusal and the repair's seconds. None when no row repairs another row's attack."""
    pairs = repair_pairs(rows)
    if not pairs:
        return None
    cells = by_cell(rows)
    header = ["repair", "of", "p", "HS attacked", "HS repaired", "HS change", "FA attacked", "FA repaired",
              "FA change", "over-refusal", "repair (s)"]  # fmt: skip
    lines = []
    for pair in pairs:
        for p in sorted(q for label, q in cells if label == pair.repaired and (pair.attacked, q) in cells):
            attacked, repaired = cells[(pair.attacked, p)], cells[(pair.repaired, p)]
            seconds = [s for s in map(_repair_seconds, repaired.values()) if s is not None]
            texts = [
                pair.repaired,
                pair.attacked,
                f"{p:g}",
                *_change(paired_outcomes(attacked, repaired)),
                *_change(paired_task_outcomes(attacked, repaired)),
                _refusals(attacked, repaired),
                f"{statistics.fmean(seconds):.0f}" if seconds else MISSING,
            ]
            lines.append([TableCell(text) for text in texts])
    return Table(header, lines)


def repair_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    """The section: the table and how to read it; nothing when the grid has no repair."""
    table = repair_table(rows)
    if table is None:
        return []
    legend = (
        "Each post-hoc repair beside the attacked model it repairs (the same attack, seed by seed). HS and "
        "FA (%) after the attack and after the repair; the change is repaired minus attacked in points with "
        "its paired 95% interval (bootstrap over prompts or task items, and seeds, as in the comparisons "
        "above) and the verdict it supports. over-refusal: % of held-out benign prompts refused after the "
        "attack → after the repair, mean over seeds, the change's paired t interval over seeds in brackets. "
        "repair (s): the repair's wall time, mean over seeds; the provider pays it on every fine-tune."
    )
    return [
        ("h3", "Post-hoc repairs: after the attack and after the repair"),
        ("table", table),
        ("p", legend),
    ]
