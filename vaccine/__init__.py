"""vaccine: perturbation-aware alignment (Huang et al., NeurIPS 2024) against harmful fine-tuning.

Public API::

    from vaccine import VaccineConfig, VaccineTrainer, load_model_and_tokenizer, attach_lora
"""

from __future__ import annotations

__version__ = "0.1.0"

from .lora import LoraSettings, attach_lora, load_adapter, load_merged, merge_lora, save_adapter  # noqa: E402
from .methods.vaccine import VaccineConfig, VaccineTrainer  # noqa: E402
from .methods.vaccine.perturb import find_attention_modules  # noqa: E402
from .models import EMBEDDED_DEFAULT, load_model, load_model_and_tokenizer, load_tokenizer  # noqa: E402

__all__ = [
    "EMBEDDED_DEFAULT",
    "LoraSettings",
    "VaccineConfig",
    "VaccineTrainer",
    "__version__",
    "attach_lora",
    "find_attention_modules",
    "load_adapter",
    "load_merged",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "merge_lora",
    "save_adapter",
]
