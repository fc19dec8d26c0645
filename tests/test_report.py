"""build_report: Table 1 layout and numbers, missing cells, figures, HTML, t-SNE embedding, empty input."""

from __future__ import annotations

import random
import re
import statistics

import pytest

from vaccine.errors import DataError
from vaccine.experiments.comparisons import averaged_comparisons
from vaccine.experiments.report import build_report, order_labels
from vaccine.experiments.statements import verdict_blocks
from vaccine.experiments.store import ResultStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PS = (0.0, 0.1, 0.2)


def hs_value(label: str, p: float, seed: int) -> float:
    return (40.0 if label == "SFT" else 30.0) + 100.0 * p + 2.0 * seed


def fa_value(label: str, p: float, seed: int) -> float:
    return (90.0 if label == "SFT" else 88.0) - 10.0 * p + seed


def make_row(label: str, p: float, seed: int, **extra) -> dict:
    sft = label == "SFT"
    return {
        "key": f"{label}-{p}-{seed}",
        "label": label,
        "model": "tiny",
        "task": "sst2",
        "p": p,
        "n": 100,
        "seed": seed,
        "align_method": "sft" if sft else "vaccine",
        "finetune_defense": "none",
        "lora_mode": "double",
        "metrics": {"harmful_score": hs_value(label, p, seed), "finetune_accuracy": fa_value(label, p, seed)},
        "curves": {
            "drift": [{"step": s, "drift": s * (1.0 + p), "alignment_loss": 1.0 + 0.1 * s} for s in range(4)]
        },
        "cost": {
            "align_step_time_s": 0.5 if sft else 1.0,
            "align_peak_memory_mb": 100.0,
            "finetune_step_time_s": 0.2,
            "finetune_peak_memory_mb": 80.0,
        },
        "artifacts": {},
        "config": {},
        "versions": {},
        "created": "2025-01-01T00:00:00+00:00",
        **extra,
    }


@pytest.fixture
def store(tmp_path):
    store = ResultStore(tmp_path / "results.db")
    for label in ("Vaccine (rho=2)", "SFT"):
        for p in PS:
            for seed in (0, 1):
                if (label, p, seed) != ("Vaccine (rho=2)", 0.2, 1):  # one seed missing: no ± there
                    store.add(make_row(label, p, seed))
    return store


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The first Markdown table as {first cell: cells}, header included under key 'method'."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines if "---" not in line]
    table: dict[str, list[str]] = {}
    for row in cells:
        table.setdefault(row[0].strip("*"), row)
    return table


def number(cell: str) -> float:
    return float(re.match(r"\**([0-9.]+)", cell).group(1))


def test_report_files_table_and_averages(store, tmp_path):
    out = tmp_path / "report"
    paths = build_report(store, out)
    assert paths["markdown"] == out / "report.md" and paths["html"] == out / "report.html"
    markdown = paths["markdown"].read_text(encoding="utf-8")
    table = table_rows(markdown)
    assert table["method"] == [
        "method", "HS p=0", "HS p=0.1", "HS p=0.2", "FA p=0", "FA p=0.1", "FA p=0.2", "avg HS", "avg FA",
    ]  # fmt: skip
    assert list(table)[1:3] == ["SFT", "Vaccine (rho=2)"]  # paper order: SFT before Vaccine
    sft = table["SFT"]
    seeds = [statistics.fmean(hs_value("SFT", p, s) for s in (0, 1)) for p in PS]
    assert number(sft[7]) == pytest.approx(statistics.fmean(seeds), abs=0.05)  # avg HS = 52.0
    std = statistics.stdev([hs_value("SFT", 0.1, s) for s in (0, 1)])
    assert sft[2] == f"{seeds[1]:.1f} ± {std:.1f}"
    vaccine = table["Vaccine (rho=2)"]
    assert vaccine[3] == "**50.0**"  # a single seed: no ± std; lowest HS at p=0.2, so bold
    assert vaccine[1].startswith("**") and not sft[1].startswith("**")  # lowest HS wins
    assert sft[4].startswith("**") and not vaccine[4].startswith("**")  # highest FA wins
    assert "## tiny · sst2 · n=100" in markdown and "Tasks: sst2" in markdown


def test_missing_cells_are_dashes(store, tmp_path):
    store.add(make_row("EWC", 0.1, 0, metrics={"harmful_score": 45.0, "finetune_accuracy": None}))
    markdown = build_report(store, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    ewc = table_rows(markdown)["EWC"]
    assert ewc[1] == ewc[3] == "—" and ewc[2] == "45.0"
    assert ewc[4:7] == ["—", "—", "—"] and ewc[8] == "—"
    assert ewc[7] == "45.0†"  # average over the one p it has, flagged
    assert "† average over the p values" in markdown


def test_pngs_are_valid_and_linked(store, tmp_path):
    out = tmp_path / "report"
    paths = build_report(store, out)
    pngs = {k: v for k, v in paths.items() if k not in ("markdown", "html")}
    kinds = {key.split("n100_", 1)[1] for key in pngs}
    assert kinds == {"hs_vs_p", "fa_vs_p", "drift_curves", "alignment_loss_curves", "cost"}
    markdown = paths["markdown"].read_text(encoding="utf-8")
    page = paths["html"].read_text(encoding="utf-8")
    for path in pngs.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 2000
        rel = path.relative_to(out).as_posix()
        assert f"]({rel})" in markdown and f'<img src="{rel}"' in page


def test_cost_table_ratios_to_sft(store, tmp_path):
    markdown = build_report(store, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    lines = [line for line in markdown.splitlines() if line.startswith("| Vaccine (rho=2) |")]
    cost = [c.strip() for c in lines[-1].strip("|").split(" | ")]
    assert cost[1:] == ["1.00", "2.00×", "100", "0.20", "1.00×", "80"]


def test_html_has_table_and_images(store, tmp_path):
    page = build_report(store, tmp_path / "r")["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "<th>avg HS</th>" in page
    assert "<strong>" in page and page.count("<img ") == 5
    assert "<script" not in page and "<link" not in page and "http" not in page


def test_tsne_artifacts_are_embedded(tmp_path):
    out = tmp_path / "r"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "tsne.png").write_bytes(PNG_MAGIC)
    absolute = tmp_path / "elsewhere" / "t.png"
    absolute.parent.mkdir()
    absolute.write_bytes(PNG_MAGIC)
    rows = [
        make_row("SFT", 0.1, 0, artifacts={"tsne_png": "runs/tsne.png"}),
        make_row("SFT", 0.1, 1, artifacts={"tsne_png": str(absolute)}),
        make_row("SFT", 0.2, 0, artifacts={"tsne_png": "gone.png"}),
        make_row("SFT", 0.2, 1, artifacts={"tsne_png": str(absolute)}),  # one picture serves several rows
    ]
    paths = build_report(rows, out)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    # copied into the report's own figures/ folder, once each, so the folder stands alone
    assert markdown.count("(figures/tsne_tsne.png)") == 1 and markdown.count("(figures/tsne_t.png)") == 1
    assert (out / "figures" / "tsne_t.png").read_bytes() == PNG_MAGIC
    assert "Missing t-SNE files: gone.png" in markdown
    assert '<img src="figures/tsne_tsne.png"' in paths["html"].read_text(encoding="utf-8")
    # no picture drawn at all (t-SNE disabled in the grid): no section, no list of missing files
    markdown = build_report(rows[2:3], tmp_path / "none")["markdown"].read_text(encoding="utf-8")
    assert "t-SNE" not in markdown


def test_empty_store_is_a_clear_error(tmp_path):
    store = ResultStore(tmp_path / "empty.db")
    with pytest.raises(DataError, match=r"no evaluations to report: result store .*empty\.db is empty"):
        build_report(store, tmp_path / "r")
    with pytest.raises(DataError, match="no evaluations"):
        build_report([], tmp_path / "r")
    assert not (tmp_path / "r" / "report.md").exists()


def test_label_order_follows_the_paper():
    labels = ["Vaccine (rho=2)", "KL", "SFT", "EWC", "Non-aligned", "Vaccine (rho=1)"]
    assert order_labels(labels) == ["Non-aligned", "SFT", "EWC", "KL", "Vaccine (rho=1)", "Vaccine (rho=2)"]


# ---------------------------------------------------------------- intervals, comparisons, seeds
PROMPTS = [f"harmful prompt {i}" for i in range(400)]
RATES = {"Non-aligned": 0.60, "SFT": 0.40, "Vaccine": 0.38}  # Vaccine ~ SFT; both well below Non-aligned


def verdict_row(label: str, p: float, seed: int) -> dict:
    """A row with per-prompt verdicts: rate*400 + seed compliant prompts drawn at random (per label and
    seed), the rest refusals or, for every fifth prompt, other."""
    count = int(RATES[label] * len(PROMPTS)) + seed
    compliant = set(random.Random(f"{label}{p}{seed}").sample(range(len(PROMPTS)), count))
    kinds = [
        "compliance" if i in compliant else ("other" if i % 5 == 0 else "refusal")
        for i in range(len(PROMPTS))
    ]
    hs = 100.0 * kinds.count("compliance") / len(kinds)
    row = make_row(
        label, p, seed, verdicts={"prompts": PROMPTS, "kinds": kinds}, task_outcomes=[True, False] * 20
    )
    row["metrics"] = {"harmful_score": hs, "finetune_accuracy": 50.0}
    row["judge"] = {"judge_version": "test", "split": "smollm2-test", "n": 100, "precision": 0.9,
                    "sensitivity": 0.85, "specificity": 0.95}  # fmt: skip
    return row


def test_seeds_aggregate_and_comparisons_resolve_only_what_they_can(tmp_path):
    store = ResultStore(tmp_path / "results.db")
    for label in RATES:
        for p in (0.0, 0.1):
            for seed in (1, 2, 3):
                store.add(verdict_row(label, p, seed))
    paths = build_report(store, tmp_path / "r")
    markdown = paths["markdown"].read_text(encoding="utf-8")
    figure = paths["tiny_sst2_n100_hs_differences"]  # the comparisons as a picture, linked
    assert figure.read_bytes()[:8] == PNG_MAGIC and "](figures/tiny_sst2_n100_hs_differences.png)" in markdown
    table = table_rows(markdown)
    sft_hs = table["SFT"][1]
    assert re.fullmatch(r"40\.5 \[\d+\.\d, \d+\.\d\]", sft_hs), sft_hs  # mean over 3 seeds x 400 prompts
    low, high = (float(x) for x in re.findall(r"\[(\S+), (\S+)\]", sft_hs)[0])
    assert low < 40.5 < high and high - low < 12
    assert "**" not in table["SFT"][1]  # no bold ordering when intervals are shown
    hs_section = section(markdown, "Paired comparisons (same prompts, same seeds)")
    comparisons = [line for line in hs_section.splitlines() if line.startswith("| 0")]
    by_pair = {(c.split(" | ")[1], c.split(" | ")[2]): c for c in comparisons}
    assert "lower" in by_pair[("SFT", "Non-aligned")] and "lower" in by_pair[("Vaccine", "Non-aligned")]
    assert "not resolved" in by_pair[("Vaccine", "SFT")]
    assert ("Non-aligned", "SFT") not in by_pair  # each pair once
    averaged = {
        tuple(line.split(" | ")[1:3]): line
        for line in markdown.splitlines()
        if line.startswith("| mean of 0, 0.1 |")
    }
    assert set(averaged) == {("Vaccine", "SFT"), ("SFT", "Non-aligned"), ("Vaccine", "Non-aligned")}
    assert "lower" in averaged[("SFT", "Non-aligned")] and " — " in averaged[("SFT", "Non-aligned")]
    assert "averaged over p=0, 0.1, SFT has lower HS than Non-aligned" in markdown
    resolved = next(line for line in markdown.splitlines() if line.startswith("Resolved:"))
    assert "Vaccine has lower HS than SFT" not in resolved and "SFT has lower HS than Non-aligned" in resolved
    assert "Power: with 400 judged prompts per run and 3 seed(s) in the thinnest cell (1200" in markdown
    assert "HS judge-corrected" in markdown and "Rogan-Gladen" in markdown
    # the judge's labels are another model's answers: the report says so
    assert "answers of smollm2-135m-instruct (smollm2-test)" in markdown
    assert "These are not tiny's answers: the correction assumes" in markdown
    kinds_table = [line for line in markdown.splitlines() if line.startswith("| SFT | 0 |")][0]
    assert kinds_table.count("[") == 4  # HS, refusal, other and the corrected HS, each with an interval


def test_the_judge_sentence_names_whose_answers_measured_its_error():
    rows = [verdict_row(label, 0.1, 1) for label in RATES]
    for row in rows:
        row["model"] = "smollm2-135m-instruct"  # the model whose answers the judge's test split holds
    text = " ".join(str(block[1]) for block in verdict_blocks(rows, list(RATES), [0.1]))
    assert "held-out labelled answers of this model (smollm2-test)" in text and "These are not" not in text


def test_references_come_from_the_grid(tmp_path):
    rows = [verdict_row(label, 0.1, 1) for label in RATES]
    markdown = build_report(rows, tmp_path / "r", references=("Vaccine",))["markdown"].read_text()
    for heading in ("Paired comparisons (same prompts, same seeds)", "Fine-tune accuracy, paired"):
        comparisons = [line for line in section(markdown, heading).splitlines() if line.startswith("| 0.1 |")]
        assert {line.split(" | ")[2] for line in comparisons} == {"Vaccine"} and len(comparisons) == 2


def test_fa_comparisons_pair_task_items_and_resolve_only_what_they_can(tmp_path):
    """Vaccine answers every task item right where SFT answers half: +50 points, resolved; Non-aligned
    answers the same items as SFT: +0, not resolved. HS and FA verdicts stay apart."""
    rows = [verdict_row(label, 0.1, seed) for label in RATES for seed in (1, 2, 3)]
    for row in rows:
        if row["label"] == "Vaccine":
            row["task_outcomes"] = [True] * 40
    markdown = build_report(rows, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    fa = section(markdown, "Fine-tune accuracy, paired")
    by_pair = {tuple(line.split(" | ")[1:3]): line for line in fa.splitlines() if line.startswith("| 0.1 |")}
    assert by_pair[("Vaccine", "SFT")].startswith("| 0.1 | Vaccine | SFT | +50.0 | [")
    assert by_pair[("Vaccine", "SFT")].endswith("| **higher** |")
    assert by_pair[("SFT", "Non-aligned")].startswith("| 0.1 | SFT | Non-aligned | +0.0 | [+0.0, +0.0] |")
    assert "not resolved" in by_pair[("SFT", "Non-aligned")]
    assert "Vaccine has higher FA than SFT (+50.0 points" in fa
    hs = section(markdown, "Paired comparisons (same prompts, same seeds)")
    assert "has higher FA" not in hs and "Vaccine has higher HS" not in hs


def test_no_task_outcomes_no_fa_comparisons(tmp_path):
    rows = [verdict_row(label, 0.1, 1) for label in RATES]
    for row in rows:
        del row["task_outcomes"]
    markdown = build_report(rows, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    assert "Paired comparisons (same prompts" in markdown and "Fine-tune accuracy, paired" not in markdown


def section(markdown: str, heading: str) -> str:
    """The text under a '### heading...' line, up to the next heading."""
    return markdown.split(f"### {heading}", 1)[1].split("\n#", 1)[0]


def test_the_mechanism_table_has_drift_and_the_alignment_loss_rise_per_method_and_p(tmp_path):
    store = ResultStore(tmp_path / "results.db")
    for label, drift in (("SFT", 80.0), ("Vaccine (rho=2)", 60.0)):
        for seed in (0, 1):
            metrics = {
                "harmful_score": hs_value(label, 0.1, seed),
                "finetune_accuracy": fa_value(label, 0.1, seed),
                "embedding_drift": drift + 2.0 * seed,  # mean drift + 1, std sqrt(2)
                "alignment_loss": 2.5 + 0.1 * seed,
                "reference_alignment_loss": 2.0,  # rise 0.5 and 0.6
            }
            store.add({**make_row(label, 0.1, seed), "metrics": metrics})
    markdown = build_report(store, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    section = markdown.split("the paper's mechanism", 1)[1].split("###", 1)[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "drift p=0.1" in lines["method"] and "loss rise p=0.1" in lines["method"]
    assert lines["SFT"].startswith("| SFT | 81.0 ± 1.4 | 0.55 ± 0.07 |")
    assert lines["Vaccine (rho=2)"].startswith("| Vaccine (rho=2) | 61.0 ± 1.4 | 0.55 ± 0.07 |")


def test_mechanism_comparisons_pair_seeds_and_skip_the_unaligned(tmp_path):
    """Vaccine drifts 9-12 less than SFT on each of three seeds at both p values: resolved (per p and
    averaged); the loss rise differs by a sign that flips with the seed: not resolved; Non-aligned has no
    alignment, so it is never compared."""
    rows = []
    for label, drift in (("Non-aligned", 90.0), ("SFT", 80.0), ("Vaccine", 70.0)):
        for p in (0.0, 0.1):
            for seed, jitter in ((1, 0.0), (2, 2.0), (3, -1.0)):
                row = make_row(label, p, seed, align_method=None if label == "Non-aligned" else label.lower())
                flip = (-1) ** seed if label == "Vaccine" else 0
                row["metrics"] |= {
                    "embedding_drift": drift + jitter * (2.0 if label == "SFT" else 1.0),
                    "alignment_loss": 2.5 + 0.05 * flip,
                    "reference_alignment_loss": 2.0,
                }
                rows.append(row)
    markdown = build_report(rows, tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    lines = [line for line in markdown.splitlines() if line.startswith(("| drift |", "| loss rise |"))]
    cells = {tuple(line.split(" | ")[:4]): line for line in lines}
    assert len(lines) == 6 and not any("Non-aligned" in line for line in lines)
    for p in ("0", "0.1", "mean of 0, 0.1"):
        drift = cells[("| drift", p, "Vaccine", "SFT")]
        assert " | -10.33 | " in drift and drift.endswith("| 3 | **lower** |"), drift
        assert cells[("| loss rise", p, "Vaccine", "SFT")].endswith("| 3 | not resolved |")
    assert "at p=0, Vaccine's drift is lower than SFT's (-10.33" in markdown
    assert "Not resolved: 3 of 6." in markdown


def test_hs_averaged_over_p_matches_prompts_within_each_seed(tmp_path):
    """Seeds that sampled different prompts (as a 1000-of-BeaverTails evaluation does) are still compared
    over all their prompts: matching is within a seed, not across seeds."""
    rows = []
    for seed in (1, 2):
        prompts = [f"{prompt} (drawn by seed {seed})" for prompt in PROMPTS]  # no prompt in both seeds
        for label in ("SFT", "Vaccine"):
            for p in (0.0, 0.1):
                row = verdict_row(label, p, seed)
                row["verdicts"] = {**row["verdicts"], "prompts": prompts}
                rows.append(row)
    (found,) = averaged_comparisons(rows, ["SFT", "Vaccine"], ("SFT",))
    assert found.method == "Vaccine" and found.over == (0.0, 0.1)
    assert found.result.prompts == 400 and found.result.seeds == 2


@pytest.mark.parametrize("panels", [1, 3])
def test_figure_titles_stay_inside_the_figure(panels: int) -> None:
    """A one-panel figure is narrower than a title naming model, task and n: the title wraps instead of
    being cut at both edges, and a short title leaves the figure's size alone."""
    import matplotlib.pyplot as plt

    from vaccine.experiments.plots import figure_title

    title = "HS differences, 95% intervals (smollm2-135m-instruct, sst2, n=80, harmful-validation)"
    fig, _ = plt.subplots(1, panels, figsize=(3.6 * panels + 0.8, 1.5))
    figure_title(fig, title)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert fig._suptitle.get_text().replace("\n", " ") == title
    plt.close(fig)

    short, _ = plt.subplots(figsize=(4.4, 1.5))
    figure_title(short, "drift")
    assert short.get_figheight() == 1.5 and short._suptitle.get_text() == "drift"
    plt.close(short)
