"""`python -m looming.tls serve|connect`: the same command as ``looming tls``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
