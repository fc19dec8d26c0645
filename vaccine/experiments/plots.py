"""Figures for the experiment report: HS/FA vs harmful ratio, paired differences, drift curves, system cost.

Every function takes already-aggregated numbers (the report owns the statistics), draws with the Agg
backend (reports are built on headless machines), and writes its PNG atomically so a killed report never
leaves a truncated image behind.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

# label -> p -> (mean, std or None)
Series = dict[str, dict[float, tuple[float, float | None]]]
# p -> label -> [(step, value)], already averaged over seeds
Curves = dict[float, dict[str, list[tuple[float, float]]]]
# "method vs reference" -> [(row name, difference, low, high)], top to bottom
Differences = dict[str, list[tuple[str, float, float, float]]]
COST_STAGES = ("align", "finetune")


def label_colors(labels: Sequence[str]) -> dict[str, Any]:
    """One fixed color per label across every figure, so a method is recognisable at a glance."""
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def metric_vs_p(
    series: Series,
    colors: dict[str, Any],
    path: Path,
    ylabel: str,
    title: str,
    intervals: dict[tuple[str, float], tuple[float, float]] | None = None,
) -> Path:
    """One line per label over the harmful ratio. Error bars: the cell's 95% interval where one is given
    ((label, p) -> (low, high)), else the seed std where there is one."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    intervals = intervals or {}
    for label in _ordered(series, colors):
        cells = series[label]
        ps = sorted(cells)
        means = [cells[p][0] for p in ps]
        below, above = [], []
        for p, mean in zip(ps, means, strict=True):
            low, high = intervals.get((label, p), (mean - (cells[p][1] or 0.0), mean + (cells[p][1] or 0.0)))
            below.append(max(mean - low, 0.0))
            above.append(max(high - mean, 0.0))
        xs = [100.0 * p for p in ps]
        color = colors.get(label, "gray")
        ax.errorbar(xs, means, yerr=[below, above], marker="o", capsize=3, color=color, label=label)
    ax.set_xlabel("harmful ratio p (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def difference_panels(differences: Differences, colors: dict[str, Any], path: Path, title: str) -> Path:
    """One panel per pair (method vs reference), one row per p: the paired HS difference with its 95%
    interval, and the zero line; an interval that crosses the line is a 'not resolved'. Colored by the
    method, so the panels read like the other figures."""
    pairs = list(differences)
    height = 1.2 + 0.32 * max(len(rows) for rows in differences.values())
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs) + 0.8, height), dpi=120, squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        rows = differences[pair]
        ys = list(range(len(rows)))[::-1]
        color = colors.get(pair.split(" vs ")[0], "gray")
        for y, (_, diff, low, high) in zip(ys, rows, strict=True):
            ax.errorbar([diff], [y], xerr=[[diff - low], [high - diff]], fmt="o", capsize=3, color=color)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [name for name, *_ in rows], fontsize=8)
        ax.set_title(pair, fontsize=9)
        ax.set_xlabel("HS difference (points)")
        ax.grid(axis="x", alpha=0.3)
    figure_title(fig, title)
    return _save(fig, path)


def curve_panels(curves: Curves, colors: dict[str, Any], path: Path, ylabel: str, title: str) -> Path:
    """Small multiples, one panel per p, one line per label: drift only compares fairly at equal p."""
    ps = sorted(curves)
    fig, axes = plt.subplots(1, len(ps), figsize=(4.2 * len(ps) + 1.0, 3.8), dpi=120, squeeze=False)
    for ax, p in zip(axes[0], ps, strict=True):
        for label in _ordered(curves[p], colors):
            steps, values = zip(*curves[p][label], strict=True) if curves[p][label] else ((), ())
            ax.plot(steps, values, marker=".", color=colors.get(label, "gray"), label=label)
        ax.set_title(f"p = {100.0 * p:g}%")
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    figure_title(fig, title)
    return _save(fig, path)


def cost_bars(
    costs: dict[str, dict[str, float | None]], colors: dict[str, Any], path: Path, title: str
) -> Path:
    """Grouped bars per label: step time and peak memory for each stage; a missing stage draws no bar."""
    labels = _ordered(costs, colors)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(labels) + 4.0), 4.4), dpi=120)
    metrics = (("step_time_s", "step time (s)"), ("peak_memory_mb", "peak memory (MB)"))
    width = 0.38
    for ax, (metric, ylabel) in zip(axes, metrics, strict=True):
        for offset, stage in zip((-width / 2, width / 2), COST_STAGES, strict=True):
            key = f"{stage}_{metric}"
            present = [
                (i, costs[lab][key]) for i, lab in enumerate(labels) if costs[lab].get(key) is not None
            ]
            if not present:
                continue
            ax.bar(
                [i + offset for i, _ in present],
                [value for _, value in present],
                width,
                color=[colors.get(labels[i], "gray") for i, _ in present],
                hatch=None if stage == "align" else "//",
                edgecolor="black",
                linewidth=0.6,
            )
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, 1.3 * max([ax.get_ylim()[1], 1e-9]))  # head room for the legend
        ax.legend(handles=_stage_handles(), fontsize=8, loc="upper right", ncol=2)
    figure_title(fig, title)
    return _save(fig, path)


def _ordered(by_label: dict[str, Any], colors: dict[str, Any]) -> list[str]:
    """Labels in the report's order (the order of ``colors``), so legends read the same in every figure."""
    return [label for label in colors if label in by_label] + [lab for lab in by_label if lab not in colors]


def _stage_handles() -> list[Any]:
    """Neutral legend patches: the colors say the method, the hatching says the stage."""
    from matplotlib.patches import Patch

    return [
        Patch(facecolor="white", edgecolor="black", label="alignment"),
        Patch(facecolor="white", edgecolor="black", hatch="//", label="fine-tuning"),
    ]


def figure_title(fig: Any, title: str) -> None:
    """The figure's title, wrapped to the figure's width: a one-panel figure is narrower than a title
    naming its model and task, and matplotlib would cut the title at both edges. Each added line adds
    height, so the panels keep theirs."""
    size = FontProperties(size=plt.rcParams["figure.titlesize"]).get_size_in_points()
    characters = max(20, int(fig.get_figwidth() * 72 / (0.6 * size)))  # ~0.6 em per character
    lines = textwrap.wrap(title, characters, break_on_hyphens=False) or [""]
    fig.set_figheight(fig.get_figheight() + (len(lines) - 1) * 1.3 * size / 72)
    fig.suptitle("\n".join(lines))


def _save(fig: Any, path: Path) -> Path:
    """savefig into a temporary file beside ``path``, then rename: the PNG is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
