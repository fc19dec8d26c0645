"""Collect the embedded model's answers to HarmBench prompts in its real states, for labelling by reading.

States: the base model, SFT- and Vaccine-aligned models, and each method attacked at every p of a finished
demo grid (`vaccine run configs/demo.yaml`). Each state answers its own seeded sample of the
`harmful-validation` prompts (HarmBench minus AdvBench: never the prompts the reported Harmful Score
uses), with the demo's generation settings. Output: one JSONL row per answer (id, state, prompt, answer),
to be labelled blind to the state (docs/judges.md).

    python scripts/collect_judge_answers.py --grid configs/demo.yaml --per-state 50
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from vaccine.data.splits import harmful_validation_split
from vaccine.eval.generate import GenerationSettings, generate
from vaccine.experiments.grid import load_grid
from vaccine.experiments.stages import plan_cell
from vaccine.io import write_text_atomic
from vaccine.run_folders import load_merged_model


def states(grid_path: str) -> dict[str, list[Path]]:
    """State name -> adapters merged in order (empty: the base model)."""
    grid = load_grid(grid_path)
    found: dict[str, list[Path]] = {"base": []}
    for cell in grid.cells():
        plan = plan_cell(grid, cell)
        if plan.align is not None:
            found[f"aligned-{plan.align.method}"] = [plan.align.out]
        found[f"{cell.method.label}-p{cell.p:g}"] = plan.evaluate.adapters
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="configs/demo.yaml")
    parser.add_argument("--per-state", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/judge-labels/answers.jsonl"))
    args = parser.parse_args()
    prompts = [r.prompt for r in harmful_validation_split()]
    rows = []
    for index, (state, adapters) in enumerate(states(args.grid).items()):
        missing = [a for a in adapters if not (a / "summary.json").is_file()]
        if missing:
            print(f"skip {state}: {missing[0]} is not a finished run")
            continue
        sample = random.Random(f"{args.seed}:{state}").sample(prompts, args.per_state)
        model, tokenizer = load_merged_model("smollm2-135m-instruct", adapters)
        answers = generate(
            model, tokenizer, sample, GenerationSettings(args.max_new_tokens, 25, "chat"), desc=state
        )
        rows += [{"state": state, "prompt": p, "answer": a} for p, a in zip(sample, answers, strict=True)]
        print(f"{index}: {state}: {len(answers)} answers")
    random.Random(args.seed).shuffle(rows)  # labellers see no order that hints at the state
    text = "".join(json.dumps({"id": i, **row}) + "\n" for i, row in enumerate(rows))
    write_text_atomic(args.out, text)
    print(f"{len(rows)} answers -> {args.out}")


if __name__ == "__main__":
    main()
