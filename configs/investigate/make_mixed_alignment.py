"""Write the alignment set of configs/investigate/mixed_alignment.yaml: 150 refusal pairs of the built-in
``alignment`` split plus 50 benign chats (forgelm, the instruct task's train split) with helpful answers,
shuffled with a fixed seed. The question it answers: does the aligned model stop refusing everything, and
does Vaccine then separate from SFT?

    python configs/investigate/make_mixed_alignment.py runs/investigate-mix/alignment-mixed.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from vaccine.data.resolve import load_records
from vaccine.tasks import get_task

SEED = 42


def main(out: str) -> None:
    rng = random.Random(SEED)
    refusals = rng.sample(load_records("alignment"), 150)
    benign = rng.sample(get_task("instruct").records("train"), 50)
    rows = [{"prompt": r.prompt, "response": r.response} for r in refusals + benign]
    rng.shuffle(rows)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} pairs ({len(benign)} benign) to {path}")


if __name__ == "__main__":
    main(sys.argv[1])
