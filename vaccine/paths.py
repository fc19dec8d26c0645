"""Where vaccine keeps converted models, built data and results.

Everything derived (converted weights, trained judges, run outputs) lives under one root so that users can
find it, move it (``VACCINE_HOME``) or delete it in one go.
"""

from __future__ import annotations

import os
from pathlib import Path


def vaccine_home() -> Path:
    """The cache root: ``$VACCINE_HOME`` if set, else ``~/.cache/vaccine``."""
    return Path(os.environ.get("VACCINE_HOME", Path.home() / ".cache" / "vaccine")).expanduser()


def models_dir() -> Path:
    """Converted models (safetensors) live here, one folder per model."""
    return vaccine_home() / "models"
