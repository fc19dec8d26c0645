"""Paired comparisons of evaluation JSONs on the same prompts (HS: answers judged compliance), each against a
reference: the difference with its paired-bootstrap 95% interval, the exact McNemar p-value, the verdict,
and the smallest difference the test could detect with 80% power.

    python scripts/compare_evals.py --reference "SFT=runs/x/eval.json" "Vaccine rho 1=runs/y/eval.json" ...

Two margins against each other (does a setting change the margin? e.g. alignment length): each margin is
OTHER - REFERENCE on the same prompts, and their difference gets the paired-bootstrap interval over the
prompts all four evaluations share (no exact test applies to a difference of differences):

    python scripts/compare_evals.py --margins "80 steps=SFT80.json,Vaccine80.json" "160 steps=SFT160.json,..."

A grid cell's row file (``eval/*.row.json``) stands for its evaluation JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vaccine.stats import mcnemar_exact, minimum_detectable_difference, paired_bootstrap, verdict


def flags(path: Path) -> dict[str, bool]:
    """Prompt -> judged compliance, from one evaluation's per-prompt records, or from a grid cell's row
    file (``eval/*.row.json``: the verdicts a carried cell keeps without its answers)."""
    result = json.loads(path.read_text(encoding="utf-8"))
    if "verdicts" in result:
        pairs = zip(result["verdicts"]["prompts"], result["verdicts"]["kinds"], strict=True)
        return {prompt: kind == "compliance" for prompt, kind in pairs}
    return {r["prompt"]: r["kind"] == "compliance" for r in result["records"]["harmful"]}


def shared_outcomes(evaluations: list[dict[str, bool]]) -> tuple[int, list[np.ndarray]]:
    """Each evaluation's outcomes as a (1, prompts) array over the prompts they all share, in one order."""
    prompts = sorted(set.intersection(*(set(e) for e in evaluations)))
    if not prompts:
        raise SystemExit("the evaluations share no prompt: nothing to compare")
    return len(prompts), [np.array([[e[p] for p in prompts]], float) for e in evaluations]


def margin_difference(first: tuple[Path, Path], second: tuple[Path, Path]) -> dict[str, float | str | int]:
    """The two margins (HS of OTHER - HS of REFERENCE, each a (reference, other) pair of evaluations) and
    the second minus the first with its paired-bootstrap 95% interval, over the prompts all four share."""
    count, (ref1, other1, ref2, other2) = shared_outcomes(
        [flags(path) for pair in (first, second) for path in pair]
    )
    margin1, margin2 = other1 - ref1, other2 - ref2
    difference, low, high = paired_bootstrap(margin2, margin1)
    return {
        "prompts": count,
        "first": 100.0 * float(margin1.mean()),
        "second": 100.0 * float(margin2.mean()),
        "difference": difference,
        "low": low,
        "high": high,
        "verdict": verdict(low, high),
    }


def named_pair(item: str) -> tuple[str, tuple[Path, Path]]:
    """``NAME=REFERENCE.json,OTHER.json`` -> (NAME, (REFERENCE, OTHER))."""
    name, _, pair = item.partition("=")
    paths = pair.split(",")
    if not name or len(paths) != 2 or not all(paths):
        raise SystemExit(f"--margins: expected NAME=REFERENCE.json,OTHER.json; got {item!r}")
    return name, (Path(paths[0]), Path(paths[1]))


def print_margins(items: list[str]) -> None:
    if len(items) != 2:
        raise SystemExit("--margins takes two NAME=REFERENCE.json,OTHER.json items")
    (name1, first), (name2, second) = (named_pair(item) for item in items)
    m = margin_difference(first, second)
    print(f"| margin at {name1} | margin at {name2} | {name2} - {name1} [95% CI] | verdict | prompts |")
    print("|---:|---:|---:|---|---:|")
    interval = f"{m['difference']:+.1f} [{m['low']:+.1f}, {m['high']:+.1f}]"
    print(f"| {m['first']:+.1f} | {m['second']:+.1f} | {interval} | {m['verdict']} | {m['prompts']} |")


def print_comparisons(reference_item: str, items: list[str]) -> None:
    """One row per NAME=eval.json against the reference: ``compare``'s numbers, formatted from the unrounded
    bootstrap (``compare`` rounds to two decimals for the store; rounding twice can move the last digit)."""
    ref_name, _, ref_path = reference_item.partition("=")
    reference = flags(Path(ref_path))
    print(f"| vs {ref_name} | HS | difference [95% CI] | McNemar p | verdict | detectable (80% power) |")
    print("|---|---:|---:|---:|---|---:|")
    for item in items:
        name, _, path = item.partition("=")
        count, (a, b) = shared_outcomes([flags(Path(path)), reference])
        difference, low, high = paired_bootstrap(a, b)
        p_value = mcnemar_exact(a, b)
        mdd = minimum_detectable_difference(count, 100.0 * b.mean())
        print(
            f"| {name} | {100.0 * a.mean():.1f} | {difference:+.1f} [{low:+.1f}, {high:+.1f}] | "
            f"{p_value:.3f} | {verdict(low, high)} | {mdd:.1f} (n={count}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="NAME=eval.json (not with --margins)")
    parser.add_argument("--margins", action="store_true", help="compare two NAME=REF.json,OTHER.json margins")
    parser.add_argument("others", nargs="+", help="NAME=eval.json (with --margins: NAME=REF.json,OTHER.json)")
    args = parser.parse_args()
    if args.margins == (args.reference is not None):
        parser.error("give either --reference or --margins")
    if args.margins:
        print_margins(args.others)
    else:
        print_comparisons(args.reference, args.others)


if __name__ == "__main__":
    main()
