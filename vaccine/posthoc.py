"""The post-hoc stage: the provider repairs the user's fine-tuned model before serving it.

VLGuard's post-hoc strategy (a short safety fine-tune of the fine-tuned model) and Antidote (one-shot pruning
of the weights that drive harmful answers) both act after the attack, whatever the attack's learning rate or
length was: the provider's last line of defense. Read top to bottom: validate the spec (the method and its
knobs), let the method write its adapter into the run folder, and write the summary last, atomically (it
marks the stage done). The repaired model is the adapters the summary lists, merged in order.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed

from vaccine.io import write_json_atomic
from vaccine.repairs import REPAIRS, RepairMethod
from vaccine.settings import LoraFields, ModelSettings, TrainingSettings, require, setting


@dataclass(kw_only=True)
class PosthocSpec(ModelSettings, TrainingSettings, LoraFields):
    """Everything one post-hoc repair needs, validated before any compute. Every field is also a flag of
    ``vaccine posthoc``; the training settings are the safety fine-tune's (Antidote reads only
    ``batch_size`` and ``max_length``, for scoring)."""

    method: str = setting(help="post-hoc method: safety-finetune, antidote")
    attacked: list[Path] = setting(
        factory=list,
        help="adapter or run folder of the attacked model, merged in order (Double-LoRA: the alignment one, "
        "then the fine-tuning one); repeatable",
        flag="--attacked",
    )
    method_args: dict[str, Any] = setting(
        factory=dict, help="a method knob (repeatable)", flag="--method-arg"
    )
    lr: float = setting(5e-4, "peak learning rate of the safety fine-tune")
    max_length: int = setting(160, "tokens per sample (prompt and answer), longer ones are cut")

    def __post_init__(self) -> None:
        ModelSettings.__post_init__(self)
        TrainingSettings.__post_init__(self)
        LoraFields.__post_init__(self)
        self.attacked = [Path(p) for p in self.attacked]
        require(bool(self.attacked), "attacked", "needs the attacked model's adapters (at least one)")
        self.method_obj: RepairMethod = REPAIRS.build(self.method, **self.method_args)
        self.training = TrainingArguments(**self.training_arguments(self.dtype))

    @property
    def repaired(self) -> list[Path]:
        """The repaired model: adapters merged in order (known before the stage runs)."""
        return self.method_obj.repaired_adapters(self.attacked, self.out / "adapter")

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain.update(out=str(self.out), attacked=[str(p) for p in self.attacked])
        plain["lora"] = dataclasses.asdict(self.lora)
        plain["method_knobs"] = dataclasses.asdict(self.method_obj)
        plain["training"] = self.training.to_dict()
        return plain


def run_posthoc(spec: PosthocSpec) -> dict[str, Any]:
    """Repair the attacked model; returns the summary also written to ``out/summary.json``."""
    set_seed(spec.seed)
    spec.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.out / "config.json", spec.to_dict())
    started = time.perf_counter()
    details = spec.method_obj.repair(spec)
    summary = {
        **details,
        "method": spec.method,
        "adapters": [str(p) for p in spec.repaired],
        "repair_time_s": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(spec.out / "summary.json", summary)
    return summary
