"""API efficiency: for the propagation run, the vendor calls syncd made, split into reads and
writes (the simulators' own counters), and writes against the lower bound.

The lower bound is, per target tool and action, ceil(changes that tool needs / the largest batch
its client sends in one call), summed. Two runs of the same scenario (see propagation.py):

* ``spread``: ``--changes`` changes at random times over ``--duration`` seconds with 1 s polls,
  the propagation benchmark's run. Changes in different poll cycles cannot share a call, so the
  lower bound is out of reach by design there; ``write_ratio`` is reported for it as the issue
  defines it.
* ``burst``: the same number of changes made at once, where batching can reach the bound.

``python bench/efficiency.py [--accounts 4] [--quick]``; last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, landed, machine, quiet_logs
from propagation import DEFAULT_POLL, scenario


def figures(run: dict[str, Any]) -> dict[str, Any]:
    reads = sum(c["reads"] for c in run["calls"].values())
    writes = sum(c["writes"] for c in run["calls"].values())
    lower = sum(v["lower_bound"] for v in run["writes_lower_bound_by_target"].values())
    per_target = {}
    for target, c in run["calls"].items():
        bound = sum(v["lower_bound"] for k, v in run["writes_lower_bound_by_target"].items()
                    if k.startswith(target + ":"))
        per_target[target] = {**c, "writes_lower_bound": bound,
                              "write_ratio": round(c["writes"] / bound, 2) if bound else None}
    return {"reads": reads, "writes": writes, "writes_lower_bound": lower,
            "write_ratio": round(writes / lower, 3) if lower else None,
            "per_target": per_target, "lower_bound_detail": run["writes_lower_bound_by_target"],
            "calls_by_route": run["calls_by_route"], "rate_limited": sum(
                c["rate_limited"] for c in run["calls"].values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=4)
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="40 changes over 10 s")
    args = p.parse_args()
    quiet_logs()
    if args.quick:
        args.changes, args.duration = 40, 10.0
    n = min(args.accounts, len(landed()))
    scale = DEFAULT_POLL / args.poll_interval
    common = {"changes": args.changes, "poll_interval": args.poll_interval, "scale": scale,
              "sample": 0.05, "seed": args.seed}
    spread = anyio.run(lambda: scenario(n, duration=args.duration, **common))
    burst = anyio.run(lambda: scenario(n, duration=0.0, **common))
    s, b = figures(spread), figures(burst)
    emit({"bench": "efficiency", "accounts": n, "changes": args.changes,
          "reads": s["reads"], "writes": s["writes"],
          "writes_lower_bound": s["writes_lower_bound"], "write_ratio": s["write_ratio"],
          "burst_reads": b["reads"], "burst_writes": b["writes"],
          "burst_writes_lower_bound": b["writes_lower_bound"],
          "burst_write_ratio": b["write_ratio"],
          "spread": s, "burst": b, "vendors": spread["vendors"], "scale": scale,
          "machine": machine()})


if __name__ == "__main__":
    main()
