"""The alignment stage: base model + alignment data -> a LoRA adapter trained with SFT or Vaccine.

Readable top to bottom (a torchtune-style recipe): validate the spec, load data and model, attach LoRA,
train with :class:`VaccineTrainer`, write the adapter, the resolved config and the log into one folder.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from . import __version__
from .callbacks import JsonlLogger
from .data.records import Record
from .data.sources import load_records
from .data.templates import TEMPLATES
from .data.tokenize import CompletionCollator, CompletionDataset
from .errors import ConfigError, DataError
from .io import write_json_atomic
from .lora import LoraSettings, attach_lora, count_parameters, save_adapter
from .models import load_model_and_tokenizer
from .trainer import VaccineConfig, VaccineTrainer

ALIGN_METHODS = ("sft", "vaccine")


@dataclass
class AlignSpec:
    """Everything one alignment run needs, validated before any compute.

    ``training`` carries the Trainer's knobs and Vaccine's (rho, tau); ``method='sft'`` forces rho=0.
    """

    method: str
    out: Path
    training: VaccineConfig
    model: str = "smollm2-135m-instruct"
    data: str = "alignment"
    num_samples: int | None = None
    template: str = "chat"
    max_length: int = 256
    dtype: str = "float32"
    lora: LoraSettings = field(default_factory=LoraSettings)
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.method not in ALIGN_METHODS:
            raise ConfigError(f"--method must be one of {', '.join(ALIGN_METHODS)}; got {self.method!r}")
        if self.method == "sft" and self.training.rho != 0:
            raise ConfigError("--rho applies to --method vaccine; SFT is the same training with rho=0")
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1; got {self.num_samples}")
        if self.template not in TEMPLATES:
            raise ConfigError(f"--template must be one of {', '.join(TEMPLATES)}; got {self.template!r}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be >= 8; got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON: what was run, with every default filled in."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "training"}
        plain["out"] = str(self.out)
        plain["lora"] = dataclasses.asdict(self.lora)
        plain["training"] = self.training.to_dict()
        return plain


def select_samples(records: list[Record], num_samples: int | None, seed: int, source: str) -> list[Record]:
    """A seeded random subset; asking for more than exists is an error, never a silent shrink."""
    if num_samples is None:
        return records
    if num_samples > len(records):
        raise DataError(f"--num-samples {num_samples} is larger than the {len(records)} samples in {source}")
    return random.Random(seed).sample(records, num_samples)


def _save_adapter_atomically(model: Any, target: Path) -> Path:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapter(model, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def run_alignment(spec: AlignSpec) -> dict[str, Any]:
    """Train the alignment adapter; returns the run summary also written to ``out/summary.json``."""
    set_seed(spec.training.seed)
    records = select_samples(load_records(spec.data), spec.num_samples, spec.training.seed, spec.data)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code
    )
    model = attach_lora(model, spec.lora)
    dataset = CompletionDataset(records, tokenizer, template=spec.template, max_length=spec.max_length)
    spec.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(spec.out / "config.json", spec.to_dict())
    trainer = VaccineTrainer(
        model=model,
        args=spec.training,
        train_dataset=dataset,
        data_collator=CompletionCollator(tokenizer),
        callbacks=[JsonlLogger(spec.out / "log.jsonl")],
    )
    checkpoint = (
        get_last_checkpoint(spec.training.output_dir) if Path(spec.training.output_dir).is_dir() else None
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    adapter = _save_adapter_atomically(trainer.model, spec.out / "adapter")
    trainable, total = count_parameters(trainer.model)
    summary = {
        "method": spec.method,
        "adapter": str(adapter),
        "samples": len(records),
        "steps": trainer.state.global_step,
        "perturbation_passes": trainer.perturbation_passes,
        "resumed_from": checkpoint,
        "train_loss": result.training_loss,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "vaccine_version": __version__,
    }
    write_json_atomic(spec.out / "summary.json", summary)
    return summary
