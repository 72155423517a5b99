#!/usr/bin/env python3
"""The snapshot layer's two goals in one run: point cost against cache size, and materializing.

Runs, one after the other in this process, on the same disk:

1. ``bench_snapshot_point.py``: the cost of a snapshot point after a 1 KB change with a
   10 KB, 1 MB and 10 MB persistent cache (goal: 10 MB within 2x of 10 KB);
2. ``bench_materialize.py``: materializing the last of 1,000 points at 10 MB against
   parsing one 10 MB JSON file (goal: within 2x of the parse).

Each part can also run alone, with more options; see their ``--help``.

Usage::

    python bench/snapshots.py            # about 2 minutes
    python bench/snapshots.py --quick    # about 30 seconds
"""

from __future__ import annotations

import argparse
import time

# the two parts live beside this script, which Python puts first on sys.path
import bench_materialize
import bench_snapshot_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and points")
    parser.add_argument("--workdir", default=None, help="directory to measure in")
    args = parser.parse_args()
    started = time.monotonic()
    bench_snapshot_point.run(argparse.Namespace(
        rounds=8 if args.quick else 40, points=5, workdir=args.workdir, profile=None))
    print()
    bench_materialize.run(argparse.Namespace(
        points=300 if args.quick else 1000, repeat=3 if args.quick else 7,
        workdir=args.workdir, profile=False))
    print(f"\n(both parts in {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
