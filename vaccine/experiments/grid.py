"""Experiment grids: YAML -> a validated ``GridConfig`` -> one ``Cell`` per (model, method, task, p, n, seed).

Everything is checked before any compute: unknown keys name their path in the file
(``methods[2].align.rhoo``), and every cell's stage specs are built (which validates methods, knobs, tasks,
p, n and training arguments), so a typo in the last cell fails in the first second, not after an hour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaccine.align import AlignSpec
from vaccine.errors import ConfigError, SettingError
from vaccine.eval.tsne import TsneSpec
from vaccine.evaluate import EvaluateSpec
from vaccine.finetune import FinetuneSpec
from vaccine.lora import LoraSettings
from vaccine.posthoc import PosthocSpec
from vaccine.settings import ModelSettings, require, same_as, setting

# Each YAML section holds some fields of one stage spec, with that field's default (one source of truth);
# the keys below are the section's, in the cache key of every stage that reads them.
TRAINING_KEYS = (
    "epochs",
    "max_steps",
    "lr",
    "batch_size",
    "grad_accum",
    "weight_decay",
    "max_length",
    "save_steps",
)
ALIGN_KEYS = (
    "data",
    "num_samples",
    *TRAINING_KEYS,
    "helpful_data",
    "helpful_share",
    "self_distill_tokens",
    "helpful_teacher",
    "full_finetune",
)
FINETUNE_KEYS = (
    *TRAINING_KEYS,
    "lora_mode",
    "harmful",
    "alignment_data",
    "drift_every",
    "drift_samples",
    "task_source",
)
EVALUATE_KEYS = (
    "harmful_prompts",
    "num_harmful",
    "num_task",
    "judge",
    "max_new_tokens",
    "batch_size",
    "engine",
    "strict",
    "num_drift",
    "benign_prompts",
    "num_benign",
)
POSTHOC_KEYS = TRAINING_KEYS  # the safety fine-tune's; a method's own knobs sit in methods[..].posthoc
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
# Settings added after grids were run: at their default they stay out of the cache key, so the stages of
# grids run before they existed are still found (a new setting at its default changes nothing).
LATER_SETTINGS = (
    "helpful_data",
    "helpful_share",
    "self_distill_tokens",
    "helpful_teacher",
    "lora",
    "full_finetune",
)


@dataclass(kw_only=True)
class TsneSettings:
    """The grid's t-SNE picture of the alignment data under each method."""

    enabled: bool = setting(True, "draw the picture")
    num_samples: int = same_as(TsneSpec, "num_samples")


@dataclass(kw_only=True)
class StageResources:
    """What one stage's task asks a Ray cluster for (``vaccine run --executor ray``). Not in any cache key:
    where a stage runs never changes what it computes. The local executor runs every stage in its own
    process and ignores these."""

    gpus: float | None = setting(
        None,
        "GPUs per task (none: 1 on a cluster with GPUs, 0 on one without); a fraction shares a GPU; more "
        "than 1 runs a training stage under `accelerate launch` on that many GPUs of one machine",
    )
    cpus: float = setting(1.0, "CPU cores per task (Ray also sets the task's OMP_NUM_THREADS from it)")
    retries: int = setting(3, "times Ray re-runs a task whose worker or machine died (it resumes)")

    def __post_init__(self) -> None:
        require(self.gpus is None or self.gpus >= 0, "gpus", f"must be >= 0; got {self.gpus}")
        whole = self.gpus is None or self.gpus <= 1 or float(self.gpus).is_integer()
        require(whole, "gpus", f"more than 1 GPU must be a whole number; got {self.gpus}")
        require(self.cpus > 0, "cpus", f"must be > 0; got {self.cpus}")
        require(self.retries >= 0, "retries", f"must be >= 0; got {self.retries}")


# The stages a grid's ``resources:`` section sizes; t-SNE pictures take the evaluation's resources.
STAGES = ("align", "finetune", "posthoc", "evaluate")
# Stages that train and so may span several GPUs under `accelerate launch` (README: Many GPUs).
LAUNCHABLE = ("align", "finetune")


def resource_defaults() -> dict[str, dict[str, Any]]:
    return {stage: section_defaults(StageResources) for stage in STAGES}


@dataclass(kw_only=True)
class ReportSettings:
    """The methods every other method is compared against, prompt by prompt, in the report."""

    references: list[str] = setting(factory=lambda: ["SFT", "Non-aligned"], help="reference method labels")


def section_defaults(spec: type, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A section's keys with their defaults, read from ``spec``'s fields."""
    fields = {f.name: f for f in dataclasses.fields(spec)}
    names = keys if keys is not None else tuple(fields)
    return {
        k: fields[k].default_factory() if fields[k].default_factory is not MISSING else fields[k].default
        for k in names
    }


def align_defaults() -> dict[str, Any]:
    return {**section_defaults(AlignSpec, ALIGN_KEYS), "lora": None}


SECTIONS: dict[str, Any] = {
    "align": align_defaults,
    "finetune": lambda: section_defaults(FinetuneSpec, FINETUNE_KEYS),
    "posthoc": lambda: section_defaults(PosthocSpec, POSTHOC_KEYS),
    "evaluate": lambda: section_defaults(EvaluateSpec, EVALUATE_KEYS),
    "lora": lambda: section_defaults(LoraSettings, LORA_KEYS),
    "tsne": lambda: section_defaults(TsneSettings),
    "report": lambda: section_defaults(ReportSettings),
}
TOP_KEYS = {
    "name",
    "out",
    "models",
    "tasks",
    "p",
    "n",
    "seeds",
    "methods",
    "align",
    "finetune",
    "posthoc",
    "evaluate",
    "lora",
    "tsne",
    "report",
    "resources",
    "template",
    "dtype",
    "reuse",
}
METHOD_KEYS = {"label", "align", "finetune", "posthoc"}


def key_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The align section's settings as they enter a cache key: later settings at their default are left
    out."""
    defaults = align_defaults()
    return {k: v for k, v in settings.items() if not (k in LATER_SETTINGS and v == defaults[k])}


def stable_hash(obj: Any) -> str:
    """Short content hash of a JSON-able object: the cache key of a stage."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MethodConfig:
    """One line of the table: an alignment method (or none: Non-aligned), a fine-tune-stage defense and
    (optionally) a post-hoc repair of the fine-tuned model."""

    label: str
    align: dict[str, Any] | None  # {"method": "vaccine", "rho": 2.0, ...}; None = Non-aligned
    finetune: dict[str, Any]  # {"defense": "none", ...knobs}
    posthoc: dict[str, Any] | None = None  # {"method": "antidote", "ratio": 0.1}; None = served as fine-tuned


@dataclass(frozen=True)
class Cell:
    """One evaluation of the grid."""

    model: str
    method: MethodConfig
    task: str
    p: float
    n: int
    seed: int


@dataclass
class GridConfig:
    name: str
    out: Path
    models: list[str]
    tasks: list[str]
    p: list[float]
    n: list[int]
    seeds: list[int]
    methods: list[MethodConfig]
    align: dict[str, Any] = field(default_factory=SECTIONS["align"])
    finetune: dict[str, Any] = field(default_factory=SECTIONS["finetune"])
    posthoc: dict[str, Any] = field(default_factory=SECTIONS["posthoc"])
    evaluate: dict[str, Any] = field(default_factory=SECTIONS["evaluate"])
    lora: dict[str, Any] = field(default_factory=SECTIONS["lora"])
    tsne: dict[str, Any] = field(default_factory=SECTIONS["tsne"])
    report: dict[str, Any] = field(default_factory=SECTIONS["report"])
    resources: dict[str, dict[str, Any]] = field(default_factory=resource_defaults)
    template: str = same_as(ModelSettings, "template")
    dtype: str = same_as(ModelSettings, "dtype")
    reuse: list[Path] = field(default_factory=list)  # other grids' `out`: their done stages are linked
    source: str = "<dict>"

    def cells(self) -> list[Cell]:
        """Every evaluation, in an order that reuses work: all p of one method before the next method."""
        grid = itertools.product(self.models, self.seeds, self.tasks, self.n, self.methods, self.p)
        return [Cell(model, method, task, p, n, seed) for model, seed, task, n, method, p in grid]


def _merge(section: str, defaults: dict[str, Any], given: Any, source: str) -> dict[str, Any]:
    if given is None:
        return dict(defaults)
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: '{section}' must be a mapping")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{source}: {section}.{unknown[0]}: unknown key; known: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


def _as_list(raw: dict[str, Any], key: str, kind: type, source: str) -> list:
    value = raw.get(key)
    values = value if isinstance(value, list) else [value]
    if value is None or not values:
        raise ConfigError(f"{source}: '{key}' is required (a value or a list)")
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: '{key}' must hold {kind.__name__} values; got {value!r}") from err


def _method(raw: Any, index: int, source: str) -> MethodConfig:
    where = f"{source}: methods[{index}]"
    if not isinstance(raw, dict) or "label" not in raw:
        raise ConfigError(f"{where}: each method needs a 'label' (and 'align' and/or 'finetune')")
    unknown = sorted(set(raw) - METHOD_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; known: {', '.join(sorted(METHOD_KEYS))}")
    align = raw.get("align")
    if align is not None and (not isinstance(align, dict) or "method" not in align):
        raise ConfigError(f"{where}.align: needs 'method' (sft, vaccine, repnoise), or null for Non-aligned")
    posthoc = raw.get("posthoc")
    if posthoc is not None and (not isinstance(posthoc, dict) or "method" not in posthoc):
        raise ConfigError(f"{where}.posthoc: needs 'method' (safety-finetune, antidote), or null for none")
    finetune = dict(raw.get("finetune") or {})
    finetune.setdefault("defense", "none")
    repair = dict(posthoc) if posthoc else None
    return MethodConfig(str(raw["label"]), dict(align) if align else None, finetune, repair)


def _resources(given: Any, source: str) -> dict[str, dict[str, Any]]:
    """The ``resources:`` section, one mapping per stage, each checked against :class:`StageResources`."""
    stages = _merge("resources", resource_defaults(), given, source)
    resources = {}
    for stage in STAGES:
        merged = _merge(f"resources.{stage}", resource_defaults()[stage], stages[stage], source)
        try:
            StageResources(**merged)
        except SettingError as err:
            raise err.written_as(f"{source}: resources.{stage}.{err.setting}") from err
        if stage not in LAUNCHABLE and (merged["gpus"] or 0) > 1:
            raise ConfigError(
                f"{source}: resources.{stage}.gpus: at most 1 ({stage} runs in one process; "
                f"only {' and '.join(LAUNCHABLE)} run under accelerate launch)"
            )
        resources[stage] = merged
    return resources


def _reuse(given: Any, source: str) -> list[Path]:
    """The ``reuse:`` folders: other grids' ``out`` folders whose done stages this grid links instead of
    computing them again (vaccine/experiments/reuse.py)."""
    if given is None:
        return []
    if not isinstance(given, list) or not all(isinstance(folder, str) for folder in given):
        raise ConfigError(f"{source}: reuse: a list of folders (other grids' 'out'); got {given!r}")
    return [Path(folder) for folder in given]


def parse_grid(raw: dict[str, Any], source: str = "<dict>") -> GridConfig:
    """Validate a grid given as a mapping (the parsed YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key; known: {', '.join(sorted(TOP_KEYS))}")
    methods = raw.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"{source}: 'methods' must be a non-empty list")
    labels = [m.get("label") for m in methods if isinstance(m, dict)]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: method labels must be unique; got {labels}")
    config = GridConfig(
        name=str(raw.get("name", Path(source).stem)),
        out=Path(raw.get("out", Path("runs") / Path(source).stem)),
        models=_as_list(raw, "models", str, source),
        tasks=_as_list(raw, "tasks", str, source),
        p=_as_list(raw, "p", float, source),
        n=_as_list(raw, "n", int, source),
        seeds=_as_list({"seeds": raw.get("seeds", [42]), **raw}, "seeds", int, source),
        methods=[_method(m, i, source) for i, m in enumerate(methods)],
        **{name: _merge(name, defaults(), raw.get(name), source) for name, defaults in SECTIONS.items()},
        **{key: str(raw[key]) for key in ("template", "dtype") if key in raw},
        resources=_resources(raw.get("resources"), source),
        reuse=_reuse(raw.get("reuse"), source),
        source=source,
    )
    align_lora = config.align["lora"]
    if align_lora is not None:
        config.align["lora"] = _merge("align.lora", config.lora, align_lora, source)
    references = config.report["references"]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise ConfigError(f"{source}: report.references must be a list of method labels; got {references!r}")
    unknown_refs = sorted(set(references) - {m.label for m in config.methods})
    if unknown_refs and "references" in (raw.get("report") or {}):
        raise ConfigError(
            f"{source}: report.references: '{unknown_refs[0]}' is not a method label of this grid"
        )
    if config.out in config.reuse:
        raise ConfigError(f"{source}: reuse: {config.out} is this grid's own 'out'")
    return config


def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid YAML file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_grid(raw, str(path))
