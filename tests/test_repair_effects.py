"""The report's post-hoc repair table: a repair pairs with the attack it repaired, and its gain and price
(HS, task accuracy, over-refusal, seconds) are read seed by seed against that attacked model."""

from __future__ import annotations

import random

from vaccine.experiments.repair_effects import RepairPair, repair_blocks, repair_pairs, repair_table

PROMPTS = [f"harmful prompt {i}" for i in range(200)]
COMPLIANT = sorted(random.Random(0).sample(range(len(PROMPTS)), 60))  # the attacked model's 30 %
ITEMS = 100


def row(
    label: str, seed: int, attack: str, compliant: list[int], correct: int, refusal: float, **extra
) -> dict:
    kinds = ["compliance" if i in compliant else "refusal" for i in range(len(PROMPTS))]
    return {
        "label": label,
        "p": 0.1,
        "seed": seed,
        "verdicts": {"prompts": PROMPTS, "kinds": kinds},
        "task_outcomes": [i < correct for i in range(ITEMS)],
        "metrics": {"benign_refusal_rate": refusal},
        "config": {"finetune": {"out": attack}},
        **extra,
    }


def grid_rows() -> list[dict]:
    rows = []
    for seed in (1, 2, 3):
        attack = f"runs/g/finetune/sft-p0.1-{seed}"
        rows.append(row("SFT", seed, attack, COMPLIANT, correct=80, refusal=2.0, posthoc_method=None))
        repaired = {"posthoc_method": "antidote", "cost": {"posthoc_time_s": 10.0 * seed}}
        rows.append(row("SFT + Antidote", seed, attack, COMPLIANT[:20], 60, 8.0 + seed, **repaired))
        rows.append(row("Vaccine", seed, f"runs/g/finetune/vaccine-{seed}", COMPLIANT[:50], 80, 1.0))
        orphan = {"posthoc_method": "antidote", "cost": {"posthoc_time_s": 5.0}}  # its attack is not here
        rows.append(row("Vaccine + Antidote", seed, f"elsewhere/{seed}", [], 50, 9.0, **orphan))
    return rows


def only_line(rows: list[dict]) -> dict[str, str]:
    """The table's one line as {column: text}."""
    table = repair_table(rows)
    assert table is not None and len(table.rows) == 1
    return dict(zip(table.header, (cell.text for cell in table.rows[0]), strict=True))


def test_a_repair_pairs_only_with_the_attack_it_repaired():
    assert repair_pairs(grid_rows()) == [RepairPair("SFT + Antidote", "SFT")]


def test_the_table_reads_gain_and_price_against_the_attacked_model():
    cells = only_line(grid_rows())
    assert (cells["repair"], cells["of"], cells["p"]) == ("SFT + Antidote", "SFT", "0.1")
    assert (cells["HS attacked"], cells["HS repaired"]) == ("30.0", "10.0")
    assert cells["HS change"].startswith("-20.0 [") and cells["HS change"].endswith("] lower")
    assert (cells["FA attacked"], cells["FA repaired"]) == ("80.0", "60.0")
    assert cells["FA change"].startswith("-20.0 [") and cells["FA change"].endswith("] lower")
    # over-refusal 2 -> 9, 10, 11: a change of 8 +- t(2) * 1 / sqrt(3)
    assert cells["over-refusal"] == "2.0 → 10.0 (+8.0 [+5.5, +10.5])"
    assert cells["repair (s)"] == "20"


def test_an_unchanged_model_is_not_resolved():
    rows = [r for r in grid_rows() if r["label"] == "SFT"]
    for seed in (1, 2, 3):
        same = {"posthoc_method": "antidote", "cost": {"posthoc_time_s": 1.0}}
        rows.append(
            row("SFT + Antidote", seed, f"runs/g/finetune/sft-p0.1-{seed}", COMPLIANT, 80, 2.0, **same)
        )
    cells = only_line(rows)
    assert cells["HS change"] == "+0.0 [+0.0, +0.0] not resolved"
    assert cells["FA change"] == "+0.0 [+0.0, +0.0] not resolved"
    assert cells["over-refusal"] == "2.0 → 2.0"  # no spread over seeds: no interval to show


def test_a_grid_without_repairs_has_no_section():
    assert repair_blocks([r for r in grid_rows() if not r.get("posthoc_method")]) == []
