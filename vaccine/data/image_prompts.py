"""The processor of a vision-language model, in the place where the text path holds a tokenizer.

A VLM loads with a processor (image processor + tokenizer + chat template) rather than a tokenizer. The
stages pass it along unchanged (``model, tokenizer = load_model_and_tokenizer(...)``); the few places that
turn records into tensors or text (:class:`~vaccine.data.context.DataContext`, generation) ask
:func:`is_processor` and take the image path. Everything here is duck-typed, so importing it costs nothing.
"""

from __future__ import annotations

from typing import Any

from vaccine.data.templates import TEMPLATES, format_prompt
from vaccine.errors import ConfigError, DataError

DEFAULT_IMAGE_TOKEN = "<image>"


def is_processor(obj: Any) -> bool:
    """True for a multimodal processor (it holds an image processor beside its tokenizer)."""
    return getattr(obj, "image_processor", None) is not None and getattr(obj, "tokenizer", None) is not None


def text_tokenizer(obj: Any) -> Any:
    """The tokenizer of a processor, or ``obj`` itself when it is a tokenizer already."""
    return obj.tokenizer if is_processor(obj) else obj


def image_placeholder(processor: Any) -> str:
    """The text that marks where an image goes (LLaVA and Idefics3: ``<image>``; the processor expands it
    into the model's image tokens)."""
    return getattr(processor, "image_token", None) or DEFAULT_IMAGE_TOKEN


def vision_prompt(
    processor: Any, prompt: str, has_image: bool, template: str = "chat", system: str | None = None
) -> str:
    """The text the model sees before its answer. With ``template="chat"`` and a processor chat template, the
    user turn is the content list VLM templates expect (an image part, then the text), so the placeholder
    lands where the model was trained to see it; otherwise the placeholder is written before the prompt and
    the text path's :func:`~vaccine.data.templates.format_prompt` does the rest (Alpaca, or the tokenizer's
    own chat template)."""
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template '{template}'; choose one of {', '.join(TEMPLATES)}")
    if template == "chat" and getattr(processor, "chat_template", None):
        return _chat(processor, prompt, has_image, system)
    text = f"{image_placeholder(processor)}\n{prompt}" if has_image else prompt
    return format_prompt(text_tokenizer(processor), text, template, system)


def _chat(processor: Any, prompt: str, has_image: bool, system: str | None) -> str:
    """The processor's chat template; one that rejects a system turn gets the system text in the user turn
    (as the text path does)."""

    def user(text: str) -> dict[str, Any]:
        image = [{"type": "image"}] if has_image else []
        return {"role": "user", "content": [*image, {"type": "text", "text": text}]}

    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}, user(prompt)]
    try:
        return processor.apply_chat_template(
            messages if system else messages[1:], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - e.g. templates that raise on a system turn
        if not system:
            raise
        return processor.apply_chat_template(
            [user(f"{system}\n\n{prompt}")], tokenize=False, add_generation_prompt=True
        )


def open_image(path: str, where: str | None = None) -> Any:
    """The image at ``path`` as RGB (VLGuard's images include palette and RGBA PNGs); an unreadable or
    missing file is a DataError that names the record (``where``) and the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}cannot read the image {path}: {type(err).__name__}: {err}") from None
