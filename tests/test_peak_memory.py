"""The peak-memory window: a window reports its own peak, not the largest thing its process did before."""

from __future__ import annotations

import pytest
import torch

from vaccine.peak_memory import peak_memory_mb, release_freed_memory, reset_peak_memory, resident_memory_mb

CPU = torch.device("cpu")
needs_reset = pytest.mark.skipif(
    not reset_peak_memory(CPU), reason="this system cannot reset the peak resident set"
)


def touch_and_free(megabytes: int) -> float:
    """Allocate and write ``megabytes``, free them; returns the peak while they were held."""
    block = torch.ones(megabytes, 2**18)  # 1 MiB per row of float32
    block.add_(1)
    held = peak_memory_mb(CPU)
    del block
    release_freed_memory()
    return held


@needs_reset
def test_a_window_does_not_inherit_an_earlier_peak():
    reset_peak_memory(CPU)
    earlier = touch_and_free(512)
    reset_peak_memory(CPU)
    assert peak_memory_mb(CPU) < earlier - 400


@needs_reset
def test_a_window_sees_a_short_lived_allocation_within_it():
    release_freed_memory()
    reset_peak_memory(CPU)
    before = resident_memory_mb()
    touch_and_free(256)
    assert peak_memory_mb(CPU) > before + 200
