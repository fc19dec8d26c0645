"""The benchmark harness measures what it says (its numbers live in docs/benchmarks.md, not here)."""

from __future__ import annotations

import torch

from benchmarks.markdown import render
from benchmarks.memory import peak_memory
from benchmarks.step_time import CONTENDERS, Contender, StepClock, amortized_step, summarize


def test_peak_memory_sees_a_short_lived_allocation():
    with peak_memory(torch.device("cpu")) as peak:
        block = torch.ones(64, 2**20)  # 256 MB, touched
        block.add_(1)
        del block
    assert peak.added_mb > 200


def row(name: str, times: list[float], perturbed: list[bool], tau: int = 1, peak: float = 1000.0):
    clock = StepClock()
    clock.times, clock.perturbed = times, perturbed
    memory = type("Peak", (), {"peak_mb": peak, "added_mb": peak - 500})()
    return summarize(Contender(name, None, tau=tau), clock, 1, memory)


def test_amortized_step_counts_the_rare_perturbation_step():
    # tau=10, warm-up step dropped; steps 1-10 with step 10 perturbed: 9 plain at 1 s, one at 2 s
    measured = row("tau10", [5.0] + [1.0] * 9 + [2.0], [True] + [False] * 9 + [True], tau=10)
    assert measured["median_step_s"] == 1.0
    assert amortized_step(measured, None) == (9 * 1.0 + 2.0) / 10
    unmeasured = row("tau100", [5.0, 1.0, 1.0], [True, False, False], tau=100)
    assert amortized_step(unmeasured, 2.0) == (99 * 1.0 + 2.0) / 100
    plain = row("sft", [5.0, 1.0, 3.0], [False] * 3)
    assert amortized_step(plain, 10.0) == plain["median_step_s"] == 2.0


def test_report_renders_every_contender_and_flags_missed_targets():
    times = {"HF Trainer SFT": 1.0, "vaccine SFT": 0.8, "Vaccine tau=1": 2.0, "Vaccine tau=10": 0.8,
             "Vaccine tau=100": 0.8, "T-Vaccine, 8 blocks": 1.6, "RepNoise": 1.5, "Booster": 2.4}  # fmt: skip
    rows = [
        row(c.name, [9.0, times[c.name]], [c.tau > 1, c.name.startswith("Vaccine")], c.tau)
        for c in CONTENDERS
    ]
    machine = {"command": "python -m benchmarks", "cpu": "cpu", "torch_threads": 2, "device": "CPU only",
               "torch": "2", "platform": "linux", "date": "today"}  # fmt: skip
    rows_g = [{"name": "today", "engine": "hf", "batch_size": 16, "seconds": 2.0, "answers_per_s": 2.0,
               "same_answers": 4},
              {"name": "prefix", "engine": "prefix", "batch_size": 64, "seconds": 0.5, "answers_per_s": 8.0,
               "same_answers": 4}]  # fmt: skip
    generation = {"prompts": 4, "max_new_tokens": 8, "speedup": 4.0, "rows": rows_g}
    page = render({"machine": machine, "step_time": {"tiny": rows}, "generation": generation, "demo": None})
    assert all(f"| {c.name} |" in page for c in CONTENDERS)
    assert "| Vaccine / our SFT step | <= 1.95 | 2.50 | NO |" in page
    assert "| our SFT / HF Trainer step | <= 1.0 | 0.80 | yes |" in page
    assert "Speed-up of the last row over the first: **4.0x**" in page
    assert "| prefix engine answers per s | >= 7 | 8.00 | yes |" in page
    assert "| prefix | prefix | 64 | 0.5 | 8.00 | 4 / 4 |" in page
