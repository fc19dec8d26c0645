"""Where the language model sits inside a model, found by structure rather than by class or attribute name.

A vision-language model holds two transformer stacks: the vision tower (CLIP, SigLIP, Qwen2-VL's ViT) and the
language model. Vaccine perturbs the language model's attention outputs and LoRA adapts its projections; the
vision tower must not be mistaken for it, and it can be the longer stack (Qwen2-VL-2B: 32 vision blocks, 28
decoder layers), so "the longest layer list" is not enough. The language model is the module that owns the
text embedding (``get_input_embeddings()``): ``model.language_model`` in LLaVA and Qwen2-VL,
``model.text_model`` in Idefics3, under a PEFT wrapper too (names are those of the model passed in).
"""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D


def _adaptable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def language_model_prefix(model: nn.Module) -> str | None:
    """The qualified name of the language model inside ``model`` when ``model`` also holds other towers (a
    VLM), else None: in a plain decoder the whole body is the language model, and callers keep their text
    behaviour unchanged.

    "Other towers" means adaptable layers (Linear / Conv1D) outside the module that owns the input embedding,
    besides the output head.
    """
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_embeddings() if callable(get_embeddings) else None
    if embedding is None:
        return None
    names = {module: name for name, module in model.named_modules()}
    if embedding not in names:
        return None
    prefix = names[embedding].rpartition(".")[0]
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    outside = [
        name
        for module, name in names.items()
        if _adaptable(module) and module is not head and not is_inside(name, prefix)
    ]
    return prefix if outside else None


def is_inside(name: str, prefix: str) -> bool:
    """True when module ``name`` lies under the module ``prefix`` ("" is the root: everything)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def is_vision_language(model: nn.Module) -> bool:
    return language_model_prefix(model) is not None
