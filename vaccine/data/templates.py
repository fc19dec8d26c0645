"""Prompt formatting: the model's own chat template, or the Alpaca template the Vaccine paper used.

Training and evaluation must format prompts identically, otherwise alignment learned under one format
does not transfer to the other; every caller goes through ``format_prompt``.
"""

from __future__ import annotations

from typing import Any

from vaccine.errors import ConfigError

TEMPLATES = ("chat", "alpaca")

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA = "{preamble}\n\n### Instruction:\n{prompt}\n\n### Response:\n"


def format_prompt(tokenizer: Any, prompt: str, template: str = "chat", system: str | None = None) -> str:
    """The text the model sees before its answer. "chat" falls back to "alpaca" for tokenizers without a
    chat template (base models), so the same config runs on any model."""
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template '{template}'; choose one of {', '.join(TEMPLATES)}")
    if template == "chat" and getattr(tokenizer, "chat_template", None):
        return _chat(tokenizer, prompt, system)
    return ALPACA.format(preamble=system or ALPACA_PREAMBLE, prompt=prompt)


def _chat(tokenizer: Any, prompt: str, system: str | None) -> str:
    """Apply the chat template; templates that reject a system role get the system text in the user turn."""
    user = {"role": "user", "content": prompt}
    messages = [{"role": "system", "content": system}, user] if system else [user]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - e.g. Gemma raises on a system turn
        if not system:
            raise
        merged = [{"role": "user", "content": f"{system}\n\n{prompt}"}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
