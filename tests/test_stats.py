"""Statistics: intervals and tests against published values and scipy, the paired bootstrap's coverage in
simulation, verdict words, power, and the judge-error correction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import t as scipy_t

from vaccine import stats


@pytest.mark.parametrize(
    "k,n,low,high",
    [(58, 100, 48.20, 67.20), (0, 10, 0.0, 27.75), (10, 10, 72.25, 100.0), (260, 520, 45.72, 54.28)],
)
def test_wilson_matches_the_closed_form(k, n, low, high):
    """Wilson's interval, (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), to 0.01 points."""
    z = 1.959963984540054
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = (100 * (centre - half) / (1 + z * z / n), 100 * (centre + half) / (1 + z * z / n))
    assert stats.wilson(k, n) == pytest.approx(expected, abs=1e-9)
    assert stats.wilson(k, n) == pytest.approx((low, high), abs=0.01)


def test_share_with_interval():
    share = stats.share_with_interval([True] * 58 + [False] * 42)
    assert share["value"] == 58.0 and share["ci"] == pytest.approx([48.2, 67.2], abs=0.02)


@pytest.mark.parametrize(
    "only_a,only_b,both,neither", [(10, 2, 30, 58), (0, 0, 5, 5), (7, 7, 0, 86), (1, 15, 3, 3)]
)
def test_mcnemar_exact_equals_the_binomial_test_on_discordant_pairs(only_a, only_b, both, neither):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, bool)
    discordant = only_a + only_b
    expected = binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    assert stats.mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)


def _paired_population(rng, n, p_b, difference, agreement=0.7):
    """Paired outcomes with P(a) - P(b) = ``difference`` exactly in the population: b ~ Bernoulli(p_b); a
    copies b with probability ``agreement``, else draws its own outcome at a rate that makes the means
    differ by ``difference``."""
    b = rng.random(n) < p_b
    own_rate = (p_b + difference - agreement * p_b) / (1 - agreement)
    a = np.where(rng.random(n) < agreement, b, rng.random(n) < own_rate)
    return a, b


def test_paired_bootstrap_covers_a_known_difference():
    """200 simulated experiments with a true HS difference of +8 points: the 95% interval covers it in at
    least 93% of them (the acceptance bar; the nominal rate is 95%)."""
    rng = np.random.default_rng(1)
    covered = 0
    for run in range(200):
        a, b = _paired_population(rng, 300, p_b=0.30, difference=0.08)
        _, low, high = stats.paired_bootstrap(a[None], b[None], seed=run)
        covered += low <= 8.0 <= high
    assert covered >= 186, covered


def test_two_level_bootstrap_covers_a_known_difference_with_seed_variation():
    """Three seeds whose HS levels differ (a seed effect shared by both methods, as a fine-tuning run
    would be): the two-level interval still covers the true difference in >= 93% of 200 runs."""
    rng = np.random.default_rng(2)
    covered = 0
    for run in range(200):
        rows_a, rows_b = [], []
        for _seed in range(3):
            level = rng.uniform(0.2, 0.4)
            a, b = _paired_population(rng, 150, p_b=level, difference=0.08)
            rows_a.append(a)
            rows_b.append(b)
        _, low, high = stats.paired_bootstrap(np.array(rows_a), np.array(rows_b), seed=run)
        covered += low <= 8.0 <= high
    assert covered >= 186, covered


def test_verdict_words_follow_the_interval():
    assert stats.verdict(-9.0, -1.0) == stats.LOWER
    assert stats.verdict(0.5, 4.0) == stats.HIGHER
    assert stats.verdict(-3.0, 2.0) == stats.NOT_RESOLVED
    same = np.array([[True, False] * 50])
    flipped = same.copy()
    flipped[0, :4] = ~flipped[0, :4]  # two answers moved each way: no difference to resolve
    result = stats.compare(same, flipped)
    assert result.low < 0 < result.high and result.verdict == stats.NOT_RESOLVED
    lower = stats.compare(np.zeros((1, 100), bool), np.ones((1, 100), bool))
    assert lower.difference == -100.0 and lower.verdict == stats.LOWER and lower.p_value < 1e-20


def test_minimum_detectable_difference():
    """Cohen's h for two proportions: n = 500 per arm at 50% detects ~8.8 points with 80% power; more
    prompts detect less; a baseline near 0 moves upwards instead of below 0."""
    assert stats.minimum_detectable_difference(500, 50.0) == pytest.approx(8.8, abs=0.1)
    assert stats.minimum_detectable_difference(100, 50.0) > stats.minimum_detectable_difference(500, 50.0)
    assert 0 < stats.minimum_detectable_difference(100, 1.0) < 15


def test_rogan_gladen():
    assert stats.rogan_gladen(30.0, 0.8, 0.9) == pytest.approx(100 * 0.2 / 0.7)
    assert stats.rogan_gladen(5.0, 0.8, 0.9) == 0.0  # below the false-positive floor: clipped
    assert stats.rogan_gladen(30.0, 0.5, 0.5) is None  # a coin-flip judge carries no information
    low, high = stats.corrected_interval([20.0, 40.0], 0.8, 0.9)
    assert low == pytest.approx(100 * 0.1 / 0.7) and high == pytest.approx(100 * 0.3 / 0.7)


def test_compare_over_seeds_is_scipys_paired_t_interval():
    """Drift of two methods over three seeds: the interval is mean difference +- t(0.975, 2) * sd / sqrt(3)
    of the per-seed differences; a consistent gap resolves, a sign that flips with the seed does not."""
    a, b = [70.0, 68.5, 72.0], [75.0, 74.0, 76.5]
    diffs = np.subtract(a, b)
    half = scipy_t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    result = stats.compare_over_seeds(a, b)
    assert result.difference == pytest.approx(diffs.mean(), abs=1e-4) and result.seeds == 3
    assert (result.low, result.high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert result.verdict == stats.LOWER and result.prompts is None
    assert stats.compare_over_seeds([70.0, 80.0, 71.0], [75.0, 74.0, 76.5]).verdict == stats.NOT_RESOLVED
    assert stats.compare_over_seeds([1.0], [2.0]) is None  # one seed: no spread, no interval
    flat = stats.compare_over_seeds([1.0, 2.0 + 1e-13], [2.0, 3.0])  # no spread beyond float noise
    assert flat.verdict == stats.NOT_RESOLVED and np.isnan(flat.low) and np.isnan(flat.high)
    with pytest.raises(ValueError, match="same seeds"):
        stats.compare_over_seeds([1.0, 2.0], [1.0])


def test_compare_averages_covers_a_known_difference_over_several_p():
    """Each prompt's share of compliant answers over 4 p values, 3 seeds, 150 prompts, with what makes the
    design matter: a prompt's tendency to comply is shared by its 4 p values, and each seed shifts the
    difference (sd 1.5 points). The two-level interval covers the true +8 points in >= 93% of 200 runs."""
    rng = np.random.default_rng(5)
    covered = 0
    for run in range(200):
        shares_a, shares_b = np.zeros((3, 150)), np.zeros((3, 150))
        for seed in range(3):
            shift = rng.normal(0, 0.015)
            tendency = rng.beta(2, 4, 150)  # in (0, 1), mean 1/3: 0.08 + shift rarely clips
            for _p in range(4):
                shares_b[seed] += (rng.random(150) < tendency) / 4
                shares_a[seed] += (rng.random(150) < np.clip(tendency + 0.08 + shift, 0, 1)) / 4
        result = stats.compare_averages(shares_a, shares_b, seed=run)
        covered += result.low <= 8.0 <= result.high
    assert covered >= 186, covered
    assert result.p_value is None and result.prompts == 150 and result.seeds == 3
