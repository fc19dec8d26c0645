"""Peak memory of a block of work: accelerator memory on CUDA, resident set size on CPU.

On CPU ``ru_maxrss`` only ever grows over a process's life, so comparing contenders in one process needs a
window: a thread samples the RSS every few milliseconds while the block runs. Before each window the
allocator gives freed memory back (``malloc_trim``), so one contender's leftovers do not count for the next.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * _PAGE / 2**20


def release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Peak:
    baseline_mb: float = 0.0
    peak_mb: float = 0.0

    @property
    def added_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


@contextmanager
def peak_memory(device: torch.device, interval_s: float = 0.002) -> Iterator[Peak]:
    """Measure the peak while the block runs; the result fills in when the block exits."""
    release_freed_memory()
    result = Peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        result.baseline_mb = torch.cuda.memory_allocated(device) / 2**20
        yield result
        result.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        return
    result.baseline_mb = result.peak_mb = rss_mb()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval_s):
            result.peak_mb = max(result.peak_mb, rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result.peak_mb = max(result.peak_mb, rss_mb())
