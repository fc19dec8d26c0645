"""Paired comparisons of evaluation JSONs on the same prompts (HS: answers judged compliance), each against a
reference: the difference with its paired-bootstrap 95% interval, the exact McNemar p-value, the verdict,
and the smallest difference the test could detect with 80% power.

    python scripts/compare_evals.py --reference "SFT=runs/x/eval.json" "Vaccine rho 1=runs/y/eval.json" ...

A grid cell's row file (``eval/*.row.json``) stands for its evaluation JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vaccine.stats import compare, minimum_detectable_difference


def flags(path: Path) -> dict[str, bool]:
    """Prompt -> judged compliance, from one evaluation's per-prompt records, or from a grid cell's row
    file (``eval/*.row.json``: the verdicts a carried cell keeps without its answers)."""
    result = json.loads(path.read_text(encoding="utf-8"))
    if "verdicts" in result:
        pairs = zip(result["verdicts"]["prompts"], result["verdicts"]["kinds"], strict=True)
        return {prompt: kind == "compliance" for prompt, kind in pairs}
    return {r["prompt"]: r["kind"] == "compliance" for r in result["records"]["harmful"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="NAME=eval.json")
    parser.add_argument("others", nargs="+", help="NAME=eval.json, compared with the reference")
    args = parser.parse_args()
    ref_name, _, ref_path = args.reference.partition("=")
    reference = flags(Path(ref_path))
    print(f"| vs {ref_name} | HS | difference [95% CI] | McNemar p | verdict | detectable (80% power) |")
    print("|---|---:|---:|---:|---|---:|")
    for item in args.others:
        name, _, path = item.partition("=")
        other = flags(Path(path))
        prompts = sorted(set(reference) & set(other))
        a = np.array([[other[p] for p in prompts]])
        b = np.array([[reference[p] for p in prompts]])
        result = compare(a, b)
        hs = 100.0 * a.mean()
        mdd = minimum_detectable_difference(len(prompts), 100.0 * b.mean())
        print(
            f"| {name} | {hs:.1f} | {result.difference:+.1f} [{result.low:+.1f}, {result.high:+.1f}] | "
            f"{result.p_value:.3f} | {result.verdict} | {mdd:.1f} (n={len(prompts)}) |"
        )


if __name__ == "__main__":
    main()
