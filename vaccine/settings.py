"""Every stage setting once: a dataclass field with its default and help text.

The stage specs (``AlignSpec``, ``FinetuneSpec``, ``EvaluateSpec``) are built from the groups below, as
TRL's ``SFTConfig`` extends ``TrainingArguments``; the CLI's flags are generated from their fields
(:func:`add_flags`), grid YAML sections are validated against the same fields, and a stage plan is
``Spec(**merged)``. An invalid value raises :class:`~vaccine.errors.SettingError` naming the field; the
front end that read it renders the name as the user wrote it (``--num-samples`` or ``align.num_samples``).

We generate flags ourselves rather than with ``transformers.HfArgumentParser`` because three kinds of
setting here do not fit it: repeatable ``KEY=VALUE`` knobs that become a dict, two-value repeatable options
(``tsne --view LABEL ADAPTERS``) and sub-commands; the pattern (fields as the only source) is TRL's.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from vaccine.data.templates import TEMPLATES
from vaccine.errors import SettingError
from vaccine.lora import LoraSettings
from vaccine.models import DTYPES, EMBEDDED_DEFAULT


def setting(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, **cli: Any) -> Any:
    """A dataclass field with its help text and CLI extras: ``aliases`` (more flags), ``choices``,
    ``flag`` (a flag name other than the field's), ``positional=True``, ``metavar``, ``cli=False`` (library
    and YAML only)."""
    metadata = {"help": help, **cli}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def same_as(owner: type, name: str, **cli: Any) -> Any:
    """A field that repeats ``owner``'s field ``name``: the same default and help, kept in one place."""
    source = {f.name: f for f in dataclasses.fields(owner)}[name]
    return field(default=source.default, metadata={**source.metadata, **cli})


def require(ok: bool, name: str, message: str) -> None:
    """Raise a :class:`SettingError` on setting ``name`` unless ``ok``."""
    if not ok:
        raise SettingError(name, message)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    require(value in choices, name, f"must be one of {', '.join(choices)}; got {value!r}")


@dataclass(kw_only=True)
class ModelSettings:
    """Which model, in which precision and prompt format."""

    model: str = setting(EMBEDDED_DEFAULT, "HF id, local path or the embedded default")
    dtype: str = setting("float32", "weights' dtype", choices=tuple(DTYPES))
    template: str = setting("chat", "prompt format: the model's chat template or Alpaca's", choices=TEMPLATES)
    trust_remote_code: bool = setting(False, "run code shipped with the model (off by default)")

    def __post_init__(self) -> None:
        check_choice(self.dtype, "dtype", tuple(DTYPES))
        check_choice(self.template, "template", TEMPLATES)


@dataclass(kw_only=True)
class TrainingSettings:
    """The optimizer and checkpoint settings both training stages share (AdamW, cosine schedule)."""

    out: Path = setting(help="run folder (re-running resumes)")
    epochs: float = setting(1.0, "training epochs")
    max_steps: int = setting(-1, "optimizer steps; overrides epochs when > 0")
    lr: float = setting(1e-3, "peak learning rate")
    batch_size: int = setting(5, "samples per device and micro-batch")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    weight_decay: float = setting(0.1, "AdamW weight decay")
    max_length: int = setting(256, "tokens per sample (prompt and answer), longer ones are cut")
    save_steps: int = setting(20, "checkpoint every N steps (the resume point)")
    logging_steps: int = setting(1, "log every N steps")
    seed: int = setting(42, "seeds the data order, the LoRA init and every sample drawn")

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        require(self.epochs > 0 or self.max_steps > 0, "epochs", f"must be > 0; got {self.epochs}")
        require(self.lr > 0, "lr", f"must be > 0; got {self.lr}")
        for name in ("batch_size", "grad_accum", "save_steps", "logging_steps"):
            require(getattr(self, name) >= 1, name, f"must be >= 1; got {getattr(self, name)}")
        require(self.max_length >= 8, "max_length", f"must be >= 8; got {self.max_length}")

    def training_arguments(self, dtype: str = "float32") -> dict[str, Any]:
        """``TrainingArguments`` fields: AdamW with a cosine schedule (the paper's), checkpoints in
        ``out/checkpoints`` (the resume point), logs every step, no external reporting."""
        import torch

        gpu = torch.cuda.is_available()
        return dict(
            output_dir=str(self.out / "checkpoints"),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            learning_rate=self.lr,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            weight_decay=self.weight_decay,
            lr_scheduler_type="cosine",
            optim="adamw_torch",
            logging_steps=self.logging_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=1,
            seed=self.seed,
            data_seed=self.seed,
            report_to=[],
            bf16=dtype == "bfloat16" and gpu,  # mixed precision needs a GPU
            # without it, processes launched on a CPU-only machine each train alone, not as one DDP group
            use_cpu=not gpu,
            remove_unused_columns=False,
            ddp_find_unused_parameters=False,  # every LoRA weight is used each step: skip DDP's graph search
            dataloader_pin_memory=gpu,
        )


def _comma_separated(values: list[str] | str | None) -> list[str] | None:
    """``["q_proj,k_proj", "v_proj"]`` -> ``["q_proj", "k_proj", "v_proj"]`` (the flag takes either form)."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else values
    return [name for item in items for name in item.split(",") if name]


@dataclass(kw_only=True)
class LoraFields:
    """The trained adapter's LoRA settings, as flags (``--lora-r``); grids set them in their ``lora:``
    section under :class:`~vaccine.lora.LoraSettings`' own names."""

    lora_r: int = same_as(LoraSettings, "r")
    lora_alpha: float = same_as(LoraSettings, "alpha")
    lora_dropout: float = same_as(LoraSettings, "dropout")
    lora_target_modules: list[str] | None = same_as(
        LoraSettings, "target_modules", aliases=("--lora-targets",)
    )

    def __post_init__(self) -> None:
        try:
            self.lora = LoraSettings(
                r=self.lora_r,
                alpha=self.lora_alpha,
                dropout=self.lora_dropout,
                target_modules=_comma_separated(self.lora_target_modules),
            )
        except SettingError as err:
            raise SettingError(f"lora_{err.setting}", err.problem) from err

    @classmethod
    def lora_fields(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """A grid's ``lora:`` section as these fields."""
        return {f"lora_{key}": value for key, value in settings.items()}


def _optional(kind: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], True
    return kind, False


def flag_name(name: str) -> str:
    """The CLI spelling of a setting: ``num_samples`` -> ``--num-samples``."""
    return "--" + name.replace("_", "-")


def knob_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from the command line; the value stays a string (``Registry.build`` types it)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expects KEY=VALUE; got {text!r}")
    return key.strip(), value.strip()


def cli_fields(spec: type) -> list[dataclasses.Field]:
    """The fields of ``spec`` that are command-line flags: the command's own first, then the shared ones."""
    flags = [f for f in dataclasses.fields(spec) if f.init and f.metadata.get("cli", True)]
    own = spec.__dict__.get("__annotations__", {})
    return sorted(flags, key=lambda f: f.name not in own)


def add_flags(parser: argparse.ArgumentParser, spec: type) -> None:
    """One flag per field of ``spec`` (a dataclass), typed, with its default and help."""
    hints = typing.get_type_hints(spec)
    for f in cli_fields(spec):
        kind, _ = _optional(hints[f.name])
        meta = f.metadata
        flags = [meta.get("flag", flag_name(f.name)), *meta.get("aliases", ())]
        options: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "")}
        if meta.get("positional"):
            flags, options = [f.name], {"help": meta.get("help", "")}
        if f.default is not MISSING:
            options["default"] = f.default
        elif f.default_factory is not MISSING:
            options["default"] = None  # the spec's factory fills it in
        elif not meta.get("positional"):
            options["required"] = True
        origin = typing.get_origin(kind) or kind
        if kind is bool:
            options["action"] = "store_true"
        elif origin is dict:
            options.update(action="append", type=knob_pair, metavar="KEY=VALUE")
        elif origin in (list, tuple):
            item = typing.get_args(kind)[0]
            if typing.get_origin(item) is tuple:  # repeatable groups of values: --view LABEL ADAPTERS
                options.update(action="append", nargs=len(typing.get_args(item)), metavar=meta.get("metavar"))
            else:
                options.update(action="append", type=_scalar(item))
        else:
            options["type"] = _scalar(kind)
        if "choices" in meta:
            options["choices"] = meta["choices"]
        parser.add_argument(*flags, **options)


def _scalar(kind: Any) -> Any:
    return {int: int, float: float, str: str, Path: Path}.get(kind, str)


def from_flags(spec: type, args: argparse.Namespace) -> Any:
    """Build ``spec`` from parsed flags (the fields left unset keep their dataclass defaults)."""
    hints = typing.get_type_hints(spec)
    values: dict[str, Any] = {}
    for f in cli_fields(spec):
        value = getattr(args, f.name)
        if value is None and f.default_factory is not MISSING:
            continue
        kind = _optional(hints[f.name])[0]
        if (typing.get_origin(kind) or kind) is dict:
            value = dict(value or [])  # the repeated KEY=VALUE pairs
        values[f.name] = value
    return spec(**values)
