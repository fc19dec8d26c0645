"""Turn evaluation rows into the paper's tables and figures, as one Markdown and one static HTML report.

The report is built from a block list (headings, text, tables, images) rendered twice, so the Markdown and
the HTML can never disagree. Statistics live in ``comparisons`` and ``mechanism``, the sentences they
support in ``statements``, a repair's gain and price in ``repair_effects``, drawing in ``plots``. Per
(model, task, n) group: Table 1 (HS and FA per harmful ratio p with 95% intervals), the answer kinds, the
paired comparisons of HS (with their picture) and of FA, the post-hoc repairs beside their attacked models,
the mechanism (drift, alignment-loss rise) with its comparisons, HS/FA-vs-p plots, drift and alignment-loss
curves, system cost relative to SFT, and any t-SNE images the runs left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vaccine.errors import DataError
from vaccine.experiments import plots
from vaccine.experiments.comparisons import (
    DEFAULT_REFERENCES,
    CellStat,
    MethodComparison,
    cell_stats,
    task_cell_stats,
)
from vaccine.experiments.mechanism import loss_rise
from vaccine.experiments.render import MISSING, Block, Table, TableCell, render_html, render_markdown
from vaccine.experiments.repair_effects import repair_blocks
from vaccine.experiments.statements import (
    all_comparisons,
    comparison_blocks,
    mechanism_blocks,
    task_comparison_blocks,
    verdict_blocks,
)
from vaccine.experiments.store import ResultStore, validate_row
from vaccine.io import write_text_atomic
from vaccine.judges.kinds import COMPLIANCE

INCOMPLETE = "†"
COST_FIELDS = (
    "align_step_time_s",
    "align_peak_memory_mb",
    "finetune_step_time_s",
    "finetune_peak_memory_mb",
    "posthoc_time_s",
)
Group = tuple[str, str, int]  # (model, task, n)


def build_report(
    store_or_rows: ResultStore | Iterable[dict[str, Any]],
    out_dir: str | os.PathLike,
    references: tuple[str, ...] = DEFAULT_REFERENCES,
) -> dict[str, Path]:
    """Write report.md, report.html and figures/*.png under ``out_dir``; ``references`` are the methods
    every other method is compared against (grid YAML: ``report.references``).

    Returns {"markdown": path, "html": path, "<figure stem>": path for each PNG written}.
    """
    rows = _load_rows(store_or_rows)
    out_dir = Path(out_dir)
    labels = order_labels({r["label"] for r in rows})
    colors = plots.label_colors(labels)
    blocks, paths = _header_blocks(rows), {}
    for group, group_rows in _groups(rows).items():
        slug = _unique_slug(group, paths)
        group_blocks, pngs = _group_section(group, group_rows, labels, colors, out_dir, slug, references)
        blocks += group_blocks
        paths.update(pngs)
    paths["markdown"] = write_text_atomic(out_dir / "report.md", render_markdown(blocks))
    paths["html"] = write_text_atomic(out_dir / "report.html", render_html(blocks))
    return paths


# ---------------------------------------------------------------------------------------------- rows


def _load_rows(source: ResultStore | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read and validate rows; an empty input is an error because an empty report looks like a result."""
    if isinstance(source, ResultStore):
        rows, where = source.rows(), f"result store {source.path}"
    else:
        rows, where = [validate_row(r) for r in source], "the rows given"
    if not rows:
        raise DataError(f"no evaluations to report: {where} is empty")
    return rows


def order_labels(labels: Iterable[str]) -> list[str]:
    """Paper order: Non-aligned, SFT, other baselines, then Vaccine variants last, each part alphabetical."""

    def rank(label: str) -> tuple[int, str]:
        low = label.lower()
        if low.replace("-", "").replace("_", "").replace(" ", "") == "nonaligned":
            return 0, low
        if low == "sft":
            return 1, low
        return (3 if low.startswith("vaccine") else 2), low

    return sorted(set(labels), key=rank)


def _groups(rows: list[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    groups: dict[Group, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["task"], row["n"])].append(row)
    return dict(sorted(groups.items()))


def _dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Keep the newest row per (label, p, seed): two rows there would otherwise count as two seeds."""
    newest: dict[tuple[str, float, int], dict[str, Any]] = {}
    for row in rows:
        slot = (row["label"], _p(row), row["seed"])
        if slot not in newest or str(row.get("created") or "") >= str(newest[slot].get("created") or ""):
            newest[slot] = row
    return list(newest.values()), len(rows) - len(newest)


def _p(row: dict[str, Any]) -> float:
    return round(float(row["p"]), 6)


def _stats(values: list[float]) -> tuple[float, float | None]:
    """Mean, and the sample std over seeds when there are at least two."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def metric_series(rows: list[dict[str, Any]], metric: str | Callable[[dict], float | None]) -> plots.Series:
    """label -> p -> (mean, std) over seeds of ``metrics[metric]`` (or of ``metric(metrics)``); rows without
    the metric are skipped."""
    read = metric if callable(metric) else (lambda metrics: metrics.get(metric))
    values: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = read(row.get("metrics") or {})
        if value is not None:
            values[row["label"]][_p(row)].append(float(value))
    return {label: {p: _stats(v) for p, v in cells.items()} for label, cells in values.items()}


def curve_series(rows: list[dict[str, Any]], field: str) -> plots.Curves:
    """p -> label -> [(step, mean over seeds)] of ``curves.drift[*][field]``; only p values with data."""
    values: dict[float, dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        for point in (row.get("curves") or {}).get("drift") or []:
            if point.get(field) is not None and point.get("step") is not None:
                values[_p(row)][row["label"]][float(point["step"])].append(float(point[field]))
    return {
        p: {
            label: [(s, statistics.fmean(v)) for s, v in sorted(steps.items())]
            for label, steps in by_label.items()
        }
        for p, by_label in sorted(values.items())
    }


def cost_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """label -> mean of each cost field over its rows (None where no row measured it)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for field in COST_FIELDS:
            value = (row.get("cost") or {}).get(field)
            if value is not None:
                values[row["label"]][field].append(float(value))
    return {
        label: {f: (statistics.fmean(v[f]) if v.get(f) else None) for f in COST_FIELDS}
        for label, v in values.items()
    }


# -------------------------------------------------------------------------------------------- tables


def _fmt(stats: tuple[float, float | None] | None, digits: int = 1) -> str:
    if stats is None:
        return MISSING
    mean, std = stats
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _average(cells: dict[float, tuple[float, float | None]], ps: list[float]) -> tuple[float | None, str]:
    """Mean over p of the per-p means (the paper's avg column), flagged when some p is missing."""
    present = [cells[p][0] for p in ps if p in cells]
    if not present:
        return None, MISSING
    return statistics.fmean(present), f"{statistics.fmean(present):.1f}" + (
        "" if len(present) == len(ps) else INCOMPLETE
    )


def table_one(
    hs: plots.Series,
    fa: plots.Series,
    labels: list[str],
    ps: list[float],
    intervals: dict[str, dict[tuple[str, float], CellStat]] | None = None,
) -> Table:
    """The paper's Table 1: HS per p, FA per p, avg HS, avg FA.

    With per-prompt outcomes (``intervals``: metric -> (label, p) -> CellStat) every cell shows its 95%
    interval and nothing is bold: which method is lower is the comparisons table's call, not the eye's.
    Without them (older rows) cells show mean ± std over seeds and the best per column is bold.
    """
    header = ["method", *(f"HS p={p:g}" for p in ps), *(f"FA p={p:g}" for p in ps), "avg HS", "avg FA"]
    lower_is_better = [True] * len(ps) + [False] * len(ps) + [True, False]
    intervals = intervals or {}
    grid: list[list[tuple[float | None, str]]] = []
    for label in labels:
        line = []
        for metric, series in (("harmful_score", hs), ("finetune_accuracy", fa)):
            for p in ps:
                stat, cell = intervals.get(metric, {}).get((label, p)), series.get(label, {}).get(p)
                line.append((stat.value, stat.text()) if stat else (cell[0] if cell else None, _fmt(cell)))
        grid.append(line + [_average(hs.get(label, {}), ps), _average(fa.get(label, {}), ps)])
    cells = (
        [[TableCell(text) for _, text in line] for line in grid]
        if any(intervals.values())
        else _bold(grid, lower_is_better)
    )
    return Table(header, [[TableCell(label)] + line for label, line in zip(labels, cells, strict=True)])


def _bold(grid: list[list[tuple[float | None, str]]], lower_is_better: list[bool]) -> list[list[TableCell]]:
    """Bold every cell that equals its column's best as displayed (ties at one decimal are all bold)."""
    best = []
    for col, low in enumerate(lower_is_better):
        shown = [round(line[col][0], 1) for line in grid if line[col][0] is not None]
        best.append((min(shown) if low else max(shown)) if shown else None)
    return [
        [
            TableCell(text, value is not None and round(value, 1) == best[col])
            for col, (value, text) in enumerate(line)
        ]
        for line in grid
    ]


def mechanism_table(rows: list[dict[str, Any]], labels: list[str], ps: list[float]) -> Table | None:
    """The paper's mechanism, per method and p: the embedding drift of the served model from the aligned
    one, and how much the fine-tune raised the alignment loss (mean ± std over seeds). Vaccine's claim is
    that both stay lower than after SFT."""
    drift = metric_series(rows, "embedding_drift")
    rise = metric_series(rows, loss_rise)
    if not drift and not rise:
        return None
    header = ["method", *(f"drift p={p:g}" for p in ps), *(f"loss rise p={p:g}" for p in ps)]
    lines = [
        [TableCell(label)]
        + [TableCell(_fmt(drift.get(label, {}).get(p))) for p in ps]
        + [TableCell(_fmt(rise.get(label, {}).get(p), digits=2)) for p in ps]
        for label in labels
        if label in drift or label in rise
    ]
    return Table(header, lines)


def cost_table(costs: dict[str, dict[str, float | None]], labels: list[str]) -> Table:
    """Step time and peak memory per stage, with step time relative to SFT where an SFT row exists, and the
    wall time of a post-hoc repair where a method has one (the provider pays it for every fine-tune)."""
    sft = costs.get("SFT", {})
    header = ["method", "align step (s)", "align ×SFT", "align peak mem (MB)"]
    header += ["finetune step (s)", "finetune ×SFT", "finetune peak mem (MB)"]
    repairs = any(costs[label].get("posthoc_time_s") is not None for label in labels if label in costs)
    header += ["post-hoc repair (s)"] if repairs else []
    rows = []
    for label in (lab for lab in labels if lab in costs):
        c, line = costs[label], [TableCell(label)]
        for stage in ("align", "finetune"):
            time, base = c[f"{stage}_step_time_s"], sft.get(f"{stage}_step_time_s")
            line.append(TableCell(MISSING if time is None else f"{time:.2f}"))
            line.append(TableCell(f"{time / base:.2f}×" if time is not None and base else MISSING))
            memory = c[f"{stage}_peak_memory_mb"]
            line.append(TableCell(MISSING if memory is None else f"{memory:.0f}"))
        if repairs:
            repair = c.get("posthoc_time_s")
            line.append(TableCell(MISSING if repair is None else f"{repair:.0f}"))
        rows.append(line)
    return Table(header, rows)


# ------------------------------------------------------------------------------------------ sections


def _header_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    labels = ", ".join(order_labels({r["label"] for r in rows}))
    models, tasks = (
        ", ".join(sorted({r["model"] for r in rows})),
        ", ".join(sorted({r["task"] for r in rows})),
    )
    seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in rows}))
    legend = (
        "HS: harmful score, % of answers the judge calls compliance (lower is better). FA: fine-tune "
        "accuracy (%, higher is better)."
    )
    cells = (
        f"Cells: the share over every judged answer with its 95% interval (Wilson for one seed; a two-level "
        f"bootstrap over seeds, then prompts, for several); {MISSING}: not evaluated. Older rows without "
        f"per-prompt verdicts show mean ± sample std over seeds, best per column in bold."
    )
    return [
        ("h1", "Harmful fine-tuning defense report"),
        ("p", f"Generated {now}. {len(rows)} evaluation rows."),
        ("p", f"Models: {models}. Tasks: {tasks}. Methods: {labels}. Seeds: {seeds}."),
        ("p", f"{legend} {cells}"),
    ]


def _group_section(
    group: Group,
    rows: list[dict[str, Any]],
    all_labels: list[str],
    colors: dict,
    out_dir: Path,
    slug: str,
    references: tuple[str, ...] = DEFAULT_REFERENCES,
) -> tuple[list[Block], dict[str, Path]]:
    model, task, n = group
    rows, duplicates = _dedupe(rows)
    labels = [lab for lab in all_labels if any(r["label"] == lab for r in rows)]
    hs, fa = metric_series(rows, "harmful_score"), metric_series(rows, "finetune_accuracy")
    intervals = {
        "harmful_score": cell_stats(rows, COMPLIANCE),
        "finetune_accuracy": task_cell_stats(rows),
    }
    ps = sorted({_p(r) for r in rows})
    blocks: list[Block] = [("h2", f"{model} · {task} · n={n}")]
    blocks += _table_blocks(hs, fa, labels, ps, duplicates, intervals)
    figures, where = out_dir / "figures", f"{model}, {task}, n={n}"
    found = all_comparisons(rows, labels, references)
    blocks += verdict_blocks(rows, labels, ps) + comparison_blocks(rows, found, references)
    differences = _difference_figure(found, colors, figures, slug, where)
    blocks += [("img", (_rel(path, out_dir), "hs_differences")) for path in differences.values()]
    blocks += task_comparison_blocks(rows, labels, references) + repair_blocks(rows)
    blocks += _mechanism_blocks(rows, labels, ps, references)
    pngs = _metric_figures(hs, fa, colors, figures, slug, where, intervals) | _curve_figures(
        rows, colors, figures, slug, where
    )
    blocks += [("img", (_rel(path, out_dir), name.removeprefix(f"{slug}_"))) for name, path in pngs.items()]
    cost_blocks, cost_png = _cost_section(rows, labels, colors, figures, slug, where)
    blocks += cost_blocks + [("img", (_rel(p, out_dir), "system cost")) for p in cost_png.values()]
    return blocks + _tsne_blocks(rows, labels, out_dir), pngs | cost_png | differences


def _table_blocks(
    hs: plots.Series,
    fa: plots.Series,
    labels: list[str],
    ps: list[float],
    duplicates: int,
    intervals: dict[str, dict[tuple[str, float], CellStat]] | None = None,
) -> list[Block]:
    table = table_one(hs, fa, labels, ps, intervals)
    blocks: list[Block] = [("h3", "Harmful score and fine-tune accuracy"), ("table", table)]
    if any(INCOMPLETE in c.text for line in table.rows for c in line):
        blocks.append(("p", f"{INCOMPLETE} average over the p values this method was evaluated at only."))
    if duplicates:
        note = f"{duplicates} duplicate evaluation(s) of the same method, p and seed: newest kept."
        blocks.append(("p", note))
    return blocks


def _mechanism_blocks(
    rows: list[dict[str, Any]], labels: list[str], ps: list[float], references: tuple[str, ...]
) -> list[Block]:
    table = mechanism_table(rows, labels, ps)
    if table is None:
        return []
    compared = mechanism_blocks(rows, labels, references)
    intervals = (
        "the comparisons below give the intervals."
        if compared
        else "no aligned method has two measured seeds in common with an aligned reference, so no interval "
        "and no ordering is read from it."
    )
    return [
        ("h3", "Drift and alignment loss after fine-tuning (the paper's mechanism)"),
        ("table", table),
        (
            "p",
            "drift: mean L2 distance between the served and the aligned model's attention outputs on "
            "alignment samples; loss rise: the alignment loss after fine-tuning minus the aligned model's "
            f"(nats/token). Mean ± std over seeds; {intervals}",
        ),
        *compared,
    ]


def _metric_figures(
    hs: plots.Series,
    fa: plots.Series,
    colors: dict,
    figures: Path,
    slug: str,
    where: str,
    intervals: dict[str, dict[tuple[str, float], CellStat]] | None = None,
) -> dict[str, Path]:
    out = {}
    for metric, name, series, ylabel, title in (
        ("harmful_score", "hs_vs_p", hs, "harmful score (%)", "Harmful score vs p"),
        ("finetune_accuracy", "fa_vs_p", fa, "fine-tune accuracy (%)", "Fine-tune accuracy vs p"),
    ):
        if series:
            path = figures / f"{slug}_{name}.png"
            bars = {cell: (c.low, c.high) for cell, c in (intervals or {}).get(metric, {}).items()}
            ylabel = f"{ylabel}, bars: 95% interval" if bars else ylabel
            out[f"{slug}_{name}"] = plots.metric_vs_p(
                series, colors, path, ylabel, f"{title} ({where})", bars
            )
    return out


def _difference_figure(
    found: list[MethodComparison], colors: dict, figures: Path, slug: str, where: str
) -> dict[str, Path]:
    """The comparisons table as a picture: each pair's HS difference per p with its interval."""
    if not found:
        return {}
    differences: plots.Differences = defaultdict(list)
    for c in found:
        differences[f"{c.method} vs {c.reference}"].append(
            ("mean over p" if c.p is None else f"p={c.p:g}", c.result.difference, c.result.low, c.result.high)
        )
    path = figures / f"{slug}_hs_differences.png"
    title = f"Paired HS differences, 95% intervals ({where})"
    return {f"{slug}_hs_differences": plots.difference_panels(dict(differences), colors, path, title)}


def _curve_figures(
    rows: list[dict[str, Any]], colors: dict, figures: Path, slug: str, where: str
) -> dict[str, Path]:
    out = {}
    for field, ylabel, title in (
        ("drift", "embedding drift (L2)", "Harmful embedding drift"),
        ("alignment_loss", "alignment loss (nats/token)", "Alignment loss"),
    ):
        curves = curve_series(rows, field)
        if curves:
            path = figures / f"{slug}_{field}_curves.png"
            out[f"{slug}_{field}_curves"] = plots.curve_panels(
                curves, colors, path, ylabel, f"{title} ({where})"
            )
    return out


def _cost_section(
    rows: list[dict[str, Any]], labels: list[str], colors: dict, figures: Path, slug: str, where: str
) -> tuple[list[Block], dict[str, Path]]:
    costs = cost_summary(rows)
    if not costs:
        return [], {}
    costs = {label: costs[label] for label in labels if label in costs}
    path = plots.cost_bars(costs, colors, figures / f"{slug}_cost.png", f"System cost ({where})")
    blocks: list[Block] = [
        ("h3", "System cost (mean over p and seeds)"),
        ("table", cost_table(costs, labels)),
    ]
    return blocks, {f"{slug}_cost": path}


def _tsne_blocks(rows: list[dict[str, Any]], labels: list[str], out_dir: Path) -> list[Block]:
    """Copy every t-SNE PNG the rows list (once each; one picture may serve several rows) into the report's
    figures/ folder, so the report folder stands alone, and embed it. When none was drawn (a grid with t-SNE
    disabled, or not run that far) the section is left out rather than listing every picture as missing."""
    seen: set[Path] = set()
    images: list[Block] = []
    missing: list[str] = []
    for row in sorted(rows, key=lambda r: (labels.index(r["label"]), _p(r), r["seed"])):
        for key, value in sorted((row.get("artifacts") or {}).items()):
            if "tsne" not in key or not isinstance(value, str) or not value:
                continue
            source = Path(value)
            if not source.is_absolute() and not source.is_file():
                source = out_dir / value
            if source.resolve() in seen:
                continue
            seen.add(source.resolve())
            if not source.is_file():
                missing.append(value)
                continue
            target = out_dir / "figures" / f"tsne_{source.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            images.append(("img", (_rel(target, out_dir), f"t-SNE: {row['label']}, seed={row['seed']}")))
    if not images:
        return []
    note = [("p", f"Missing t-SNE files: {', '.join(missing)}")] if missing else []
    return [("h3", "t-SNE of alignment-data embeddings, before and after fine-tuning"), *images, *note]


def _rel(path: Path, out_dir: Path) -> str:
    """A link relative to the report, so the report folder can be moved or zipped as a whole."""
    try:
        return Path(os.path.relpath(path, out_dir)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(path).as_posix()


def _unique_slug(group: Group, taken: dict[str, Path]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{group[0]}_{group[1]}_n{group[2]}").strip("-.") or "group"
    slug, i = base, 2
    while any(k.startswith(f"{slug}_") for k in taken):
        slug, i = f"{base}-{i}", i + 1
    return slug
