"""The paper's mechanism, compared with intervals: does Vaccine's served model drift less from its aligned
model, and lose less of its alignment, than SFT's?

Drift and the alignment-loss rise are measured once per run (one number per method, p and seed), so the
seeds are the only replicates: each method is compared with each aligned reference seed by seed (the same
seed gives both the same fine-tuning data and order), with scipy's paired t interval, per p and averaged
over p. Only aligned methods are compared: a non-aligned model's drift is measured from the base model, not
from an alignment, so it answers a different question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaccine import stats
from vaccine.experiments.comparisons import DEFAULT_REFERENCES, MethodComparison, by_cell, reference_pairs

QUANTITIES = {"drift": "embedding_drift", "loss rise": "loss_rise"}


def loss_rise(metrics: dict[str, Any]) -> float | None:
    """How much the fine-tune raised the alignment loss over the aligned model's (nats/token)."""
    after, before = metrics.get("alignment_loss"), metrics.get("reference_alignment_loss")
    return None if after is None or before is None else after - before


def run_value(row: dict[str, Any], quantity: str) -> float | None:
    """One run's drift or alignment-loss rise; None when the evaluation did not measure it (or got NaN)."""
    metrics = row.get("metrics") or {}
    value = loss_rise(metrics) if quantity == "loss_rise" else metrics.get(quantity)
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass(frozen=True, kw_only=True)
class MechanismComparison(MethodComparison):
    """``method`` minus ``reference`` in one mechanism ``quantity``, at one p or averaged over p (None)."""

    quantity: str


def seed_values(
    cells: dict[tuple[str, float], dict[int, dict[str, Any]]], label: str, ps: list[float], quantity: str
) -> dict[int, list[float]]:
    """seed -> the quantity at each of ``ps``, for the seeds that measured it at all of them."""
    out = {}
    for seed in set.intersection(*(set(cells.get((label, p), {})) for p in ps)):
        values = [run_value(cells[(label, p)][seed], quantity) for p in ps]
        if all(v is not None for v in values):
            out[seed] = values
    return out


def compare_runs(
    cells: dict[tuple[str, float], dict[int, dict[str, Any]]],
    pair: tuple[str, str],
    ps: list[float],
    quantity: str,
) -> stats.Comparison | None:
    """``pair[0]`` minus ``pair[1]`` seed by seed, the quantity averaged over ``ps`` within each seed."""
    method, reference = (seed_values(cells, label, ps, quantity) for label in pair)
    seeds = sorted(set(method) & set(reference))
    return stats.compare_over_seeds(
        [float(np.mean(method[s])) for s in seeds], [float(np.mean(reference[s])) for s in seeds]
    )


def _ps(cells: dict[tuple[str, float], Any], label: str) -> set[float]:
    return {p for name, p in cells if name == label}


def mechanism_comparisons(
    rows: list[dict[str, Any]], labels: list[str], references: tuple[str, ...] = DEFAULT_REFERENCES
) -> list[MechanismComparison]:
    """Every aligned method against every aligned reference, for drift and loss rise: per p, then averaged
    over the p values both were evaluated at (when there are several); only where >= 2 seeds are shared."""
    aligned = {row["label"] for row in rows if row.get("align_method")}
    cells = by_cell(rows)
    out = []
    for method, reference in reference_pairs(labels, references, aligned):
        ps = sorted(_ps(cells, method) & _ps(cells, reference))
        for name, quantity in QUANTITIES.items():
            for where in [[p] for p in ps] + ([ps] if len(ps) > 1 else []):
                result = compare_runs(cells, (method, reference), where, quantity)
                if result is not None:
                    p, over = (where[0], ()) if len(where) == 1 else (None, tuple(where))
                    out.append(MechanismComparison(p, method, reference, result, over, quantity=name))
    return out
