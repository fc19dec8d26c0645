"""The statistics behind every number the report states: intervals, paired comparisons, power, judge error.

A cell of 100 judged prompts has a binomial standard error of about 5 points, and the paper's Vaccine-vs-SFT
effect is about 7; a table without uncertainty cannot tell them apart. The formulas come from statsmodels
and scipy; only the bootstrap (a resampling loop) is written here, because it must respect the design:
two methods answered the *same* prompts (paired), under the *same* seeds (two levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import ttest_rel
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 4000
LOWER, HIGHER, NOT_RESOLVED = "lower", "higher", "not resolved"


def wilson(successes: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion, in percent (statsmodels ``proportion_confint``)."""
    if n == 0:
        return (0.0, 100.0)
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return (100.0 * float(low), 100.0 * float(high))


def share_with_interval(flags: list[bool], alpha: float = ALPHA) -> dict[str, float | list[float]]:
    """{'value': % true, 'ci': [low, high]} for one cell's per-prompt outcomes."""
    n, k = len(flags), sum(flags)
    return {"value": 100.0 * k / n if n else 0.0, "ci": [round(x, 2) for x in wilson(k, n, alpha)]}


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar p-value for paired binary outcomes (same prompts, two models)."""
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue)


@dataclass(frozen=True)
class Comparison:
    """a - b with its 95% interval, a test's p-value where one applies, and the verdict the interval gives.

    For HS: points, a paired bootstrap interval and McNemar's p (``prompts`` judged per seed); for a
    quantity measured once per run (drift, loss): its unit, a t interval over seeds (``prompts`` None)."""

    difference: float
    low: float
    high: float
    p_value: float | None
    verdict: str
    prompts: int | None
    seeds: int


def verdict(low: float, high: float) -> str:
    """'lower' / 'higher' only when the whole interval is on one side of 0."""
    if high < 0:
        return LOWER
    if low > 0:
        return HIGHER
    return NOT_RESOLVED


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, alpha: float = ALPHA, seed: int = 0
) -> tuple[float, float, float]:
    """Mean difference of a - b (x100) with a percentile interval from a two-level paired bootstrap.

    ``a`` and ``b`` are (seeds, prompts) arrays of 0/1, row i of both from seed i, column j from prompt j.
    Each replicate draws seeds with replacement, then prompts with replacement, and applies the same draw
    to both methods, so seed-to-seed and prompt-to-prompt variation both enter and the pairing is kept.
    With one seed this is the ordinary paired bootstrap over prompts.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same shape, got {a.shape} and {b.shape}")
    seeds, prompts = a.shape
    rng = np.random.default_rng(seed)
    diff = a - b
    seed_draw = rng.integers(0, seeds, size=(samples, seeds)) if seeds > 1 else np.zeros((samples, 1), int)
    prompt_draw = rng.integers(0, prompts, size=(samples, seeds, prompts))
    replicate = diff[seed_draw[:, :, None], prompt_draw].mean(axis=(1, 2))
    low, high = np.quantile(replicate, [alpha / 2, 1 - alpha / 2])
    return 100.0 * float(diff.mean()), 100.0 * float(low), 100.0 * float(high)


def compare(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> Comparison:
    """Paired comparison of two methods' (seeds, prompts) outcomes."""
    a, b = np.atleast_2d(np.asarray(a, bool)), np.atleast_2d(np.asarray(b, bool))
    difference, low, high = paired_bootstrap(a, b, alpha=alpha, seed=seed)
    return Comparison(
        round(difference, 2),
        round(low, 2),
        round(high, 2),
        mcnemar_exact(a, b),
        verdict(low, high),
        prompts=a.shape[1],
        seeds=a.shape[0],
    )


def compare_averages(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> Comparison:
    """Paired comparison of (seeds, prompts) shares in [0, 1], e.g. each prompt's share of p values at which
    the answer complied: the two-level bootstrap interval; no exact test applies to shares, so no p-value."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    difference, low, high = paired_bootstrap(a, b, alpha=alpha, seed=seed)
    rounded = round(difference, 2), round(low, 2), round(high, 2)
    return Comparison(*rounded, None, verdict(low, high), prompts=a.shape[1], seeds=a.shape[0])


def compare_over_seeds(a: list[float], b: list[float], alpha: float = ALPHA) -> Comparison | None:
    """Paired comparison of a quantity measured once per run (drift, alignment loss), seed i of ``a``
    against seed i of ``b``: the mean difference with the t interval of scipy's paired t-test. Seeds are
    the only replicates, so with 3 seeds the interval is wide (t = 4.3). None below two seeds; differences
    equal on every seed up to float noise leave no spread to estimate an interval from: 'not resolved',
    with NaN bounds."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    differences = np.subtract(a, b, dtype=float)
    difference = float(differences.mean())
    if np.ptp(differences) <= 1e-9 * max(1.0, float(np.abs(differences).max())):
        return Comparison(round(difference, 4), math.nan, math.nan, None, NOT_RESOLVED, None, len(a))
    test = ttest_rel(a, b)
    interval = test.confidence_interval(1 - alpha)
    low, high = float(interval.low), float(interval.high)
    return Comparison(
        round(difference, 4), low, high, float(test.pvalue), verdict(low, high), prompts=None, seeds=len(a)
    )


def minimum_detectable_difference(n: int, baseline: float, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Smallest HS difference (points, downwards from ``baseline`` %) that a two-sided test on ``n`` prompts
    per arm detects with ``power``: statsmodels' power of two independent proportions (Cohen's h).

    Pairing (same prompts) only adds power when answers correlate, so this is a conservative statement of
    what a 'not resolved' can still hide.
    """
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=1.0)
    base = min(max(baseline / 100.0, 1e-6), 1 - 1e-6)
    phi = 2 * math.asin(math.sqrt(base))
    # Move away from the baseline in the direction with room left (a 5% baseline cannot drop by 20 points).
    target = phi - h if phi - h >= 0 else phi + h
    other = math.sin(min(max(target, 0.0), math.pi) / 2) ** 2
    return round(100.0 * abs(base - other), 1)


def rogan_gladen(apparent: float, sensitivity: float, specificity: float) -> float | None:
    """The true prevalence (%) behind an apparent one, given the judge's sensitivity and specificity:
    (apparent + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 100]. None when the
    judge is no better than chance (the correction is undefined)."""
    youden = sensitivity + specificity - 1
    if youden <= 0:
        return None
    corrected = (apparent / 100.0 + specificity - 1) / youden
    return 100.0 * min(max(corrected, 0.0), 1.0)


def corrected_interval(
    ci: tuple[float, float] | list[float], sensitivity: float, specificity: float
) -> tuple[float, float] | None:
    """The Rogan-Gladen map applied to an interval's ends (it is monotone). It carries the sampling error
    of the cell, not the uncertainty of the judge's own sensitivity and specificity."""
    low, high = (rogan_gladen(x, sensitivity, specificity) for x in ci)
    return None if low is None or high is None else (low, high)
