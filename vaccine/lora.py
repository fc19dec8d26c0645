"""LoRA adapters: the parameters Vaccine trains, at alignment and at fine-tuning.

Defaults follow the official Vaccine code (r=8, alpha=4, dropout 0.1 on the attention and MLP projections).
Target modules are found per model so that the same settings work on Llama-style models, GPT-2, OPT and
GPT-NeoX without the user knowing their layer names; in a vision-language model only its language model is
adapted (the vision tower and the projector stay frozen).

An alignment may instead train every weight (``full_finetune``: issue 14's LoRA-versus-full test; in a VLM
every weight of its language model and output head). Its output folder then holds the trained weights as
``full_weights.safetensors`` in place of an adapter, and :func:`load_merged` puts either kind onto a base
model, so every later stage reads both alike.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import Conv1D

from .errors import ConfigError, ModelError, SettingError
from .vision.structure import is_inside, language_model_prefix

# Attention + MLP projections of Llama-style models (Llama, Qwen2, Mistral, Gemma, SmolLM2, ...).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The same role (attention + MLP) in families that name their layers differently.
FAMILY_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "gptj": ("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
    "bloom": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "falcon": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
}
ADAPTER_CONFIG = "adapter_config.json"
FULL_WEIGHTS = "full_weights.safetensors"  # a fully fine-tuned alignment's weights, in its adapter folder


@dataclass
class LoraSettings:
    """LoRA hyper-parameters; ``target_modules=None`` means "attention and MLP projections of this model"."""

    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float = field(default=4, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "module names to adapt (default: this model's attention and MLP projections)"},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise SettingError("r", f"the LoRA rank must be a positive integer; got {self.r!r}")
        if not self.alpha > 0:
            raise SettingError("alpha", f"must be positive; got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise SettingError("dropout", f"must be in [0, 1); got {self.dropout!r}")
        if isinstance(self.target_modules, (list, tuple)):
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise SettingError("target_modules", f"must be non-empty names; got {self.target_modules!r}")
            self.target_modules = list(self.target_modules)
        elif self.target_modules is not None and not isinstance(self.target_modules, str):
            raise SettingError(
                "target_modules", f"must be a list, a string or None; got {self.target_modules!r}"
            )


def _linear_names(model: torch.nn.Module, inside: str | None = None) -> list[str]:
    """Leaf names of adaptable layers (Linear / GPT-2 Conv1D), output head excluded, in model order; only
    those under the module named ``inside`` when given."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for qualified, module in model.named_modules():
        if module is head or not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        if inside is not None and not is_inside(qualified, inside):
            continue
        leaf = qualified.rsplit(".", 1)[-1]
        if leaf not in names and leaf != "lm_head":
            names.append(leaf)
    return names


def _default_targets(present: list[str], model_type: str) -> list[str]:
    """This family's attention + MLP projections among the ``present`` layer names."""
    for candidates in (
        FAMILY_TARGETS.get(model_type, ()),
        DEFAULT_TARGETS,
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, ()),
    ):
        found = [name for name in candidates if name in present]
        if found:
            return found
    if present:
        return present
    raise ModelError(f"no Linear/Conv1D layers to put LoRA on in this {model_type or 'model'}")


def resolve_target_modules(model: torch.nn.Module, settings: LoraSettings) -> list[str] | str:
    """Explicit targets are checked to exist; otherwise pick this model's attention + MLP projections. In a
    vision-language model only the language model's layers count (:func:`_language_model_targets`)."""
    language_model = language_model_prefix(model)
    if language_model is not None:
        return _language_model_targets(model, settings, language_model)
    present = _linear_names(model)
    if isinstance(settings.target_modules, str):
        return settings.target_modules  # a regex or PEFT's "all-linear": PEFT validates it
    if settings.target_modules is not None:
        missing = [t for t in settings.target_modules if t not in present]
        if missing:
            raise ConfigError(f"lora target_modules {missing} not found in the model; it has {present}")
        return list(settings.target_modules)
    return _default_targets(present, getattr(getattr(model, "config", None), "model_type", ""))


def _language_model_targets(model: torch.nn.Module, settings: LoraSettings, prefix: str) -> str:
    """The targets of a vision-language model as a regex over full module names (PEFT full-matches a string
    target against each module's name): the names chosen as for a text model, but only under the language
    model ``prefix``, so the vision tower (CLIP and SigLIP name their projections q_proj ... too) and the
    projector stay frozen. A regex the user gives is used as written."""
    if isinstance(settings.target_modules, str):
        return settings.target_modules
    present = _linear_names(model, inside=prefix)
    if settings.target_modules is not None:
        missing = [t for t in settings.target_modules if t not in present]
        if missing:
            raise ConfigError(
                f"lora target_modules {missing} not found in the language model ({prefix}); it has {present}"
            )
        names = list(settings.target_modules)
    else:
        text_config = getattr(model.config, "text_config", None) or model.config
        names = _default_targets(present, getattr(text_config, "model_type", ""))
    return rf"{re.escape(prefix)}\..*\.({'|'.join(re.escape(name) for name in names)})"


def freeze_outside_language_model(model: torch.nn.Module) -> torch.nn.Module:
    """Before a full fine-tune: in a vision-language model only the language model and its output head
    keep training, so the vision tower and the projector stay frozen as they do under LoRA (and the saved
    weights hold only what was trained). A text model is returned unchanged."""
    prefix = language_model_prefix(model)
    if prefix is None:
        return model
    head = model.get_output_embeddings()
    head_weights = {id(param) for param in head.parameters()} if head is not None else set()
    for name, param in model.named_parameters():
        if not is_inside(name, prefix) and id(param) not in head_weights:
            param.requires_grad_(False)
    return model


def attach_lora(model: torch.nn.Module, settings: LoraSettings | None = None) -> PeftModel:
    """Wrap ``model`` with a fresh LoRA adapter; only the adapter's parameters stay trainable."""
    if isinstance(model, PeftModel):
        raise ModelError("the model already carries an adapter; merge_lora() it first or keep training it")
    settings = settings or LoraSettings()
    targets = resolve_target_modules(model, settings)
    uses_conv1d = any(isinstance(m, Conv1D) for m in model.modules())
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        fan_in_fan_out=uses_conv1d,  # GPT-2's Conv1D stores weights transposed
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(f"cannot attach LoRA: {err}") from err


def merge_lora(model: PeftModel) -> torch.nn.Module:
    """Fold the adapter into the base weights (Double-LoRA: the aligned model becomes the new base)."""
    if not isinstance(model, PeftModel):
        raise ModelError("merge_lora needs a model with a LoRA adapter (a PeftModel)")
    return model.merge_and_unload()


def save_adapter(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save only the adapter (small) as safetensors plus adapter_config.json; a model without an adapter (a
    full fine-tune) saves its trained weights as ``full_weights.safetensors``. ``weights`` replaces the
    model's own tensors when those are shards (FSDP): pass ``gather_trainable_weights(model)``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(path), safe_serialization=True, state_dict=weights)
        return path
    if weights is None:  # named_parameters lists a tied weight once, so safetensors sees no shared tensor
        weights = {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    if not weights:
        raise ModelError("nothing to save: the model has no adapter and no trainable weights")
    save_file({name: t.contiguous() for name, t in weights.items()}, str(path / FULL_WEIGHTS))
    return path


def is_sharded(model: torch.nn.Module) -> bool:
    """True when FSDP2 (``fully_shard``) split the model's parameters across ranks (they are DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(param, DTensor) for param in model.parameters())


def gather_trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole tensor of every trainable (LoRA) parameter, gathered from the FSDP2 shards on all ranks.

    Why not ``accelerator.get_state_dict``: that gathers the frozen base model too (14 GB for a 7B model) to
    keep a few MB of adapter. This is a collective: every rank must call it, in the same order."""
    from torch.distributed.tensor import DTensor

    return {
        name: (param.full_tensor() if isinstance(param, DTensor) else param).detach().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def read_adapter_config(directory: str | os.PathLike[str]) -> dict:
    """Validate an adapter folder before PEFT touches it, so errors name the file and the problem."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise ModelError(f"{path} not found: {directory} is not a saved LoRA adapter")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        found = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise ModelError(f"{path}: expected peft_type 'LORA', found {found!r}")
    folder = Path(directory)
    if not (folder / "adapter_model.safetensors").is_file():
        if (folder / "adapter_model.bin").is_file():
            raise ModelError(
                f"{folder}: the adapter is a pickle file (adapter_model.bin), which can run code on load; "
                "vaccine loads safetensors only. Convert it with safetensors.torch.save_file if you trust it."
            )
        raise ModelError(f"{folder / 'adapter_model.safetensors'} not found (safetensors only)")
    return config


def load_adapter(
    base_model: torch.nn.Module, directory: str | os.PathLike[str], *, trainable: bool = False
) -> PeftModel:
    """Put a saved LoRA adapter on ``base_model``; ``trainable=True`` to keep training it (Single-LoRA)."""
    if is_full_weights(directory):
        raise ConfigError(
            f"{directory} holds a full fine-tune's weights, not a LoRA adapter: it cannot be kept as a "
            "separate adapter (lora_mode single); use lora_mode double"
        )
    read_adapter_config(directory)
    try:
        return PeftModel.from_pretrained(base_model, str(directory), is_trainable=trainable)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"cannot load adapter from {directory}: {err}") from err


def is_full_weights(directory: str | os.PathLike[str]) -> bool:
    """True for a fully fine-tuned alignment's folder (``full_weights.safetensors``, no adapter)."""
    return (Path(directory) / FULL_WEIGHTS).is_file()


def load_full_weights(base_model: torch.nn.Module, directory: str | os.PathLike[str]) -> torch.nn.Module:
    """Overwrite ``base_model``'s weights with a full fine-tune's; every saved tensor must fit a weight."""
    path = Path(directory) / FULL_WEIGHTS
    try:
        weights = load_file(str(path))
    except (OSError, safetensors.SafetensorError) as err:
        raise ModelError(f"{path}: not a readable safetensors file: {err}") from err
    own = dict(base_model.named_parameters())
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise ModelError(f"{path}: {len(unknown)} tensors match no weight of this model, e.g. {unknown[:3]}")
    for name, tensor in weights.items():  # every tensor checked before any weight is written
        if tensor.shape != own[name].shape:
            raise ModelError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the model's {tuple(own[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in weights.items():
            own[name].copy_(tensor)
    return base_model


def load_merged(base_model: torch.nn.Module, directory: str | os.PathLike[str]) -> torch.nn.Module:
    """``base_model`` with a saved stage's weights in it: a LoRA adapter merged, or a full fine-tune's
    weights written over its own (Double-LoRA: the result is the next stage's base)."""
    if is_full_weights(directory):
        return load_full_weights(base_model, directory)
    return merge_lora(load_adapter(base_model, directory))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for logs and the parameter-efficiency report."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
