"""Where the demo grid's wall time went, by stage, from the run folder's ``stage_times.jsonl``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from vaccine.experiments.run import stage_times_path

STAGES = ("align", "finetune", "evaluate", "tsne")


def stage_breakdown(run_dir: Path) -> dict[str, Any] | None:
    """Seconds and count per stage over every stage the grid computed; None when it never ran here."""
    path = stage_times_path(run_dir)
    if not path.is_file():
        return None
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        totals[row["stage"]] += row["seconds"]
        counts[row["stage"]] += 1
    stages = {s: {"seconds": round(totals[s], 1), "count": counts[s]} for s in STAGES if s in totals}
    return {"run_dir": str(run_dir), "stages": stages, "total_s": round(sum(totals.values()), 1)}
