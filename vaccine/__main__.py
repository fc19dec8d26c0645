"""``python -m vaccine`` is the CLI, so ``accelerate launch -m vaccine align ...`` works too."""

from .cli import main

raise SystemExit(main())
