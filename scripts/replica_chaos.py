"""Kill the leader many times: `make chaos-replicas`.

Runs tests/keeper/test_replicas.py's SIGKILL and SIGSTOP cases on anvil with the production
lease (10 s, renewed every second) and `--rounds` rounds of the 6 SIGKILL points, then prints
the takeover times (seconds from the kill or pause to the standby's lease, by the database's
clock; blocks mined in between, 1 s blocks) and whether every intent ended as exactly one
on-chain action (each case asserts it; a failure fails the run).

    python scripts/replica_chaos.py [--rounds 4] [--lease 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summarize(rows: Sequence[dict[str, object]]) -> list[list[str]]:
    """One line per signal: runs, takeover seconds and blocks (min / median / max)."""
    out = []
    for sig in sorted({str(r["signal"]) for r in rows}):
        mine = [r for r in rows if r["signal"] == sig]
        secs = [float(r["takeover_s"]) for r in mine]  # type: ignore[arg-type]
        blocks = [int(r["takeover_blocks"]) for r in mine]  # type: ignore[call-overload]
        out.append([
            sig,
            str(len(mine)),
            f"{min(secs):.2f} / {statistics.median(secs):.2f} / {max(secs):.2f}",
            f"{min(blocks)} / {statistics.median(blocks):g} / {max(blocks)}",
        ])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the 6 SIGKILL points")
    parser.add_argument("--lease", type=float, default=10.0, help="lease seconds")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.lease < 3:
        parser.error("--rounds must be >= 1 and --lease >= 3")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "takeovers.jsonl"
        env = {**os.environ, "KEEPER_REPLICA_ROUNDS": str(args.rounds),
               "KEEPER_REPLICA_LEASE": f"{args.lease:g}", "KEEPER_REPLICA_REPORT": str(report)}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/keeper/test_replicas.py", "-k", "anvil and (sigkill or paused)"],
            cwd=ROOT, env=env,
        )
        rows = [json.loads(line) for line in report.read_text().splitlines()] if (
            report.exists()) else []
    if not rows:
        print("no takeover was recorded", file=sys.stderr)
        return 1
    from keeper.report import table

    print(f"\nlease {args.lease:g} s, renewed every {min(1.0, args.lease / 6):g} s; 1 s blocks")
    print(table(["signal", "runs", "takeover s (min / median / max)",
                 "takeover blocks (min / median / max)"], summarize(rows)))
    landed = sum(int(r["landed"]) for r in rows)
    print(f"{len(rows)} leader failures; {landed} intents landed, each exactly once "
          "(journal = chain nonces in every run)" if run.returncode == 0 else
          f"{len(rows)} runs recorded; some case FAILED (see above)")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
