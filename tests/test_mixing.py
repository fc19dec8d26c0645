"""The attacker's upload: exact harmful counts, shuffling, seeding and clear errors."""

from __future__ import annotations

import pytest

from vaccine.data.mixing import harmful_count, mix_harmful, mix_in
from vaccine.data.records import Record
from vaccine.errors import ConfigError, DataError

BENIGN = [Record(f"benign {i}", "positive", "test", "benign") for i in range(2000)]
HARMFUL = [Record(f"harmful {i}", "sure", "test", "harmful") for i in range(100)]


@pytest.mark.parametrize(
    ("p", "n", "k"),
    [
        (0.0, 10, 0),
        (0.1, 200, 20),
        (0.05, 1000, 50),
        (0.2, 7, 1),
        (1.0, 5, 5),
        (0.3, 10, 3),
        (0.7, 10, 7),
        (0.01, 99, 0),
        (0.15, 20, 3),
    ],
)
def test_exact_harmful_counts(p, n, k):
    assert harmful_count(p, n) == k
    mixed = mix_harmful(BENIGN, HARMFUL, p, n, seed=0)
    assert len(mixed) == n
    assert sum(r.label == "harmful" for r in mixed) == k
    assert len({r.prompt for r in mixed}) == n  # drawn without replacement


def test_mixture_is_shuffled_and_seeded():
    mixed = mix_harmful(BENIGN, HARMFUL, 0.5, 40, seed=1)
    labels = [r.label for r in mixed]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)
    assert mixed == mix_harmful(BENIGN, HARMFUL, 0.5, 40, seed=1)
    assert mixed != mix_harmful(BENIGN, HARMFUL, 0.5, 40, seed=2)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_outside_unit_interval_is_an_error(p):
    with pytest.raises(ConfigError, match="^p: the harmful ratio"):
        mix_harmful(BENIGN, HARMFUL, p, 10, seed=0)


def test_n_larger_than_the_data_is_an_error_not_a_shrink():
    with pytest.raises(DataError, match="benign"):
        mix_harmful(BENIGN, HARMFUL, 0.0, 2001, seed=0)
    with pytest.raises(DataError, match="harmful"):
        mix_harmful(BENIGN, HARMFUL, 0.5, 400, seed=0)


def test_mix_in_adds_exactly_m():
    mixed = mix_in(BENIGN[:50], HARMFUL, 17, seed=0, extra_name="x")
    assert len(mixed) == 67 and sum(r.label == "harmful" for r in mixed) == 17
    with pytest.raises(DataError, match="x"):
        mix_in(BENIGN, HARMFUL, 101, seed=0, extra_name="x")
