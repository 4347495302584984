from __future__ import annotations

from keeper.cli import main

raise SystemExit(main())
