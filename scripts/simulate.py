#!/usr/bin/env python3
"""`keeper simulate` as a script: the same flags (see `keeper simulate --help`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
