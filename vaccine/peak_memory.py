"""Peak memory of a window of work: the allocator's peak on CUDA, the resident set's high-water mark on CPU.

Both are reset when a window opens, so a training step (and the stage made of them) reports its own peak,
not the largest thing its process did before: a grid runs many stages in one process, and the
process-lifetime peak (``ru_maxrss``) would charge an attack with the alignment that ran before it. Linux
keeps the resident set's high-water mark as ``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``;
where that cannot be done (not Linux, a locked-down /proc) the lifetime peak stands in, an upper bound, and
a warning says so once.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
from functools import cache

import torch

log = logging.getLogger(__name__)

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_RESET_PEAK_RSS = "5"  # proc(5): "reset the peak resident set size (VmHWM) to the current value"


def reset_peak_memory(device: torch.device) -> bool:
    """Open a window: later :func:`peak_memory_mb` calls report the peak since now. False where this system
    cannot reset the CPU peak (the lifetime peak then stands in)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as handle:
            handle.write(_RESET_PEAK_RSS)
    except OSError as error:
        _warn_lifetime_peak(str(error))
        return False
    return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory, or peak resident set size on CPU, since the last reset (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    high_water_kib = _status_kib("VmHWM")
    if high_water_kib is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the lifetime peak
    return high_water_kib / 1024


def resident_memory_mb() -> float:
    """The resident set size now (MiB): the baseline a window's peak is compared with. Without /proc the
    lifetime peak stands in here too, so a window's added memory reads as zero rather than as a guess."""
    current_kib = _status_kib("VmRSS")
    if current_kib is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current_kib / 1024


def _status_kib(field: str) -> int | None:
    if not os.path.exists(_STATUS):
        return None
    with open(_STATUS, encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
    return None


def release_freed_memory() -> None:
    """Give freed memory back to the system (glibc's ``malloc_trim``, CUDA's cache), so that a later
    baseline or window does not count what an earlier piece of work left in the allocator."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@cache
def _warn_lifetime_peak(reason: str) -> None:
    log.warning(
        "peak memory cannot be reset here (%s): it is the process's lifetime peak, an upper bound", reason
    )
