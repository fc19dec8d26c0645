"""Vaccine's margin over SFT against attack strength (issue 14, item 7): the evidence grid's alignments
attacked at several fine-tuning learning rates at one p, each evaluated on the grid's reported prompts; per
learning rate, the paired HS difference (method - reference) over seeds and prompts, as a table and a curve,
and the drift difference seed by seed (the paper's mechanism: does the defense still drift less?).

Follow-up papers (Antidote, Panacea, TamperBench) report that alignment-stage defenses give way under a larger
fine-tuning learning rate; this shows where the margin holds. Each learning rate runs as a grid under
OUT/runs that reuses the original grid's stages (`reuse:`: its alignments, and its own cells at its own
learning rate), so nothing is computed twice, the original grid's report keeps only its own cells, and a
killed run resumes.

    python scripts/robustness.py configs/evidence.yaml --lrs 1e-4,1e-3,3e-3 --p 0.1 \
        --methods SFT,Vaccine --out docs/results/evidence/robustness
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from vaccine.experiments.comparisons import cell_stats, comparisons  # noqa: E402
from vaccine.experiments.grid import parse_grid  # noqa: E402
from vaccine.experiments.index import store_path  # noqa: E402
from vaccine.experiments.mechanism import mechanism_comparisons  # noqa: E402
from vaccine.experiments.run import run_grid  # noqa: E402
from vaccine.experiments.stages import plan_cell  # noqa: E402
from vaccine.experiments.store import ResultStore  # noqa: E402
from vaccine.io import write_text_atomic  # noqa: E402


def attacked_rows(config: Path, lr: float, p: float, methods: list[str], out: Path) -> list[dict]:
    """The grid's cells of ``methods`` at ``p``, attacked at learning rate ``lr``. They run as a grid of
    their own under ``out/runs`` that reuses the original grid's stages (its alignments, and the cells of
    its own learning rate), so the original grid's folder and report hold only its own cells."""
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    original = parse_grid(raw, str(config))
    raw["p"] = [p]
    raw["methods"] = [m for m in raw["methods"] if m["label"] in methods]
    report = raw.get("report") or {}
    if "references" in report:  # a reference left out with its method would fail the grid's validation
        raw["report"] = {**report, "references": [r for r in report["references"] if r in methods]}
    raw["finetune"] = {**(raw.get("finetune") or {}), "lr": lr}
    raw["name"] = f"{original.name}-attack-lr{lr:g}"
    raw["out"] = str(out / "runs")
    raw["reuse"] = [str(original.out), *map(str, original.reuse)]
    grid = parse_grid(raw, str(config))
    run_grid(grid)
    store = ResultStore(store_path(grid))
    return [store.get(plan_cell(grid, cell).eval_key) for cell in grid.cells()]


def margins(rows: list[dict[str, Any]], methods: list[str], p: float) -> dict[str, Any]:
    """Each method's paired HS comparison with the reference (``methods[0]``) at ``p``, by method."""
    found = comparisons(rows, methods, (methods[0],))
    return {c.method: c.result for c in found if c.p == p}


def drift_margins(rows: list[dict[str, Any]], methods: list[str], p: float) -> dict[str, Any]:
    """Each method's drift minus the reference's at ``p``, seed by seed (paired t interval), by method."""
    found = mechanism_comparisons(rows, methods, (methods[0],))
    return {c.method: c.result for c in found if c.p == p and c.quantity == "drift"}


def _difference(result: Any) -> str:
    if result is None:
        return "-"
    return f"{result.difference:+.1f} [{result.low:+.1f}, {result.high:+.1f}], {result.verdict}"


def margin_table(results: dict[float, list[dict[str, Any]]], methods: list[str], p: float) -> str:
    """One line per learning rate: each method's HS with its interval, then each HS and drift comparison."""
    reference, others = methods[0], methods[1:]
    header = [
        "attack lr",
        *(f"HS {m}" for m in methods),
        *(f"HS {m} - {reference} [95% CI]" for m in others),
        *(f"drift {m} - {reference} [95% CI]" for m in others),
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for lr, rows in sorted(results.items()):
        hs = cell_stats(rows, "compliance")
        hs_found, drift_found = margins(rows, methods, p), drift_margins(rows, methods, p)
        cells = [hs[(m, p)].text() if (m, p) in hs else "-" for m in methods]
        cells += [_difference(hs_found.get(m)) for m in others]
        cells += [_difference(drift_found.get(m)) for m in others]
        lines.append(f"| {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def margin_plot(results: dict[float, list[dict[str, Any]]], methods: list[str], p: float, path: Path) -> Path:
    """The HS difference of each method from the reference against the learning rate, with 95% intervals."""
    reference = methods[0]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in methods[1:]:
        found = {lr: margins(rows, methods, p).get(method) for lr, rows in sorted(results.items())}
        points = [(lr, result) for lr, result in found.items() if result is not None]
        xs = [lr for lr, _ in points]
        ys = [r.difference for _, r in points]
        errors = [[r.difference - r.low for _, r in points], [r.high - r.difference for _, r in points]]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=f"{method} - {reference}")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("attack learning rate")
    ax.set_ylabel(f"HS difference at p={p:g} (points)")
    ax.set_title("Margin against attack strength (below 0: fewer harmful answers)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the grid whose alignments are attacked")
    parser.add_argument("--lrs", default="1e-4,1e-3,3e-3", help="comma-separated attack learning rates")
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--methods", default="SFT,Vaccine", help="the reference first, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("runs/robustness"))
    args = parser.parse_args()
    methods = args.methods.split(",")
    results = {
        float(lr): attacked_rows(args.config, float(lr), args.p, methods, args.out)
        for lr in args.lrs.split(",")
    }
    table = margin_table(results, methods, args.p)
    write_text_atomic(args.out / "margin.md", table)
    margin_plot(results, methods, args.p, args.out / "margin.png")
    print(table, flush=True)


if __name__ == "__main__":
    main()
