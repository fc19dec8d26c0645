"""`vaccine info`: what a bug report needs: versions, device, cache paths, installed assets."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

from . import __version__
from .assets import installed_assets
from .models import embedded_default_dir
from .paths import vaccine_home

PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "datasets")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device() -> str:
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"cuda x{torch.cuda.device_count()} ({', '.join(sorted(names))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def collect_info() -> dict[str, Any]:
    embedded = embedded_default_dir()
    return {
        "vaccine": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "device": _device(),
        "vaccine_home": str(vaccine_home()),
        "embedded_model": f"{embedded} ({'converted' if embedded.is_dir() else 'not converted yet'})",
        "assets": installed_assets(),
    }


def format_info(info: dict[str, Any]) -> str:
    lines = [f"vaccine {info['vaccine']}  python {info['python']}  {info['platform']}"]
    lines += [f"  {name:<13} {version}" for name, version in info["packages"].items()]
    lines += [
        f"device          {info['device']}",
        f"VACCINE_HOME    {info['vaccine_home']}",
        f"embedded model  {info['embedded_model']}",
        "assets:",
    ]
    lines += [f"  {name:<22} {'installed' if ok else 'MISSING'}" for name, ok in info["assets"].items()]
    return "\n".join(lines)
