"""Judge a finished grid's stored answers again with another judge, into a new result store and report.

Used to re-read the demo of an earlier judge: the answers, FA and drift of each evaluation are kept (no
generation), the harmful answers get the new judge's verdicts, and each row gets the per-prompt verdicts
that the report's intervals and paired comparisons need. (`vaccine run` does the same by itself when only
the judge changed; this script serves stores whose evaluation files predate that.)

    python scripts/rejudge_store.py runs/demo/results.sqlite runs/demo-rejudged --judge default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaccine.evaluate import EvaluateSpec, rejudge
from vaccine.experiments.report import build_report
from vaccine.experiments.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--judge", default="default")
    parser.add_argument("--references", default="SFT,Non-aligned", help="methods compared against")
    args = parser.parse_args()
    target = ResultStore(args.out / "results.sqlite")
    for row in ResultStore(args.store).rows():
        previous = json.loads(Path(row["artifacts"]["eval_json"]).read_text(encoding="utf-8"))
        config = {k: v for k, v in previous["config"].items() if k not in ("judge_version", "out")}
        config.update(config.pop("generation", {}))  # evaluations written before the settings were flat
        spec = EvaluateSpec(**config, out=args.out / "eval" / Path(row["artifacts"]["eval_json"]).name)
        spec.judge = args.judge
        result = rejudge(previous, spec)
        harmful = result["records"]["harmful"]
        target.add(
            {
                **row,
                "key": f"{row['key']}-{args.judge}",
                "metrics": result["metrics"],
                "judge": result["judge"],
                "verdicts": {
                    "prompts": [r["prompt"] for r in harmful],
                    "kinds": [r["kind"] for r in harmful],
                },
                "task_outcomes": [bool(r["correct"]) for r in result["records"].get("task", [])],
                "artifacts": {"eval_json": str(spec.out)},  # pictures of the old run are not carried over
            }
        )
        before, after = row["metrics"]["harmful_score"], result["metrics"]["harmful_score"]
        print(f"{row['label']} p={row['p']:g}: HS {before:.1f} -> {after:.1f}")
    paths = build_report(target, args.out / "report", tuple(args.references.split(",")))
    print(f"report: {paths['markdown']}")


if __name__ == "__main__":
    main()
