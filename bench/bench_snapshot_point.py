#!/usr/bin/env python3
"""The cost of one snapshot point with a 10 KB, 1 MB and 10 MB persistent cache.

Each point follows the same 1 KB change: one ~1 KB package record of the cache is
replaced. A point is ``Recorder.take_point`` on a durable log (``synchronous=FULL``)
in the state directory of a target: ``state:`` (log and snapshot files only) and
``dir:`` (also a filesystem copy of the target's root, here one small file). The
sizes run interleaved in rounds, so machine noise falls on all of them alike, and
the report gives medians side by side with the ratio 10 MB / 10 KB.

The SPEC's target: a point with a 10 MB cache costs about what it costs with a
10 KB cache; here, within 2x.

Usage::

    python bench/bench_snapshot_point.py             # 40 rounds of 5 points per size
    python bench/bench_snapshot_point.py --quick     # 8 rounds of 5
    python bench/bench_snapshot_point.py --profile state:10MB
    python bench/bench_snapshot_point.py --workdir /var/tmp
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installengine.eventlog import EventLog
from installengine.snapshots import (
    DataCache,
    DirectoryTarget,
    Recorder,
    SnapshotStore,
    StateDir,
    Target,
    When,
)

SIZES = {"10KB": 10_000, "1MB": 1_000_000, "10MB": 10_000_000}
TARGETS = ("state", "dir")
RECORD_BYTES = 1000
GOAL = 2.0


def record(i: int, generation: int) -> dict[str, Any]:
    """A ~1 KB package record, different for each generation."""
    files = [f"/usr/lib/pkg{i:06d}/file{j:02d}.so.{generation}" for j in range(28)]
    return {"name": f"pkg{i:06d}", "version": f"1.{generation}", "files": files,
            "size": i * 17 + generation}


@dataclass
class Setup:
    name: str
    recorder: Recorder
    records: int
    samples: list[float] = field(default_factory=list)
    generation: int = 0

    def point(self) -> float:
        """Change one record (the same 1 KB change at every size), then time the point."""
        self.generation += 1
        i = self.generation % self.records
        self.recorder.cache.persistent["packages"][f"pkg{i:06d}"] = record(i, self.generation)
        started = time.perf_counter()
        self.recorder.take_point("bench", When.COMPLETED, fingerprint="bench", attempt=1)
        return time.perf_counter() - started


def make_target(kind: str, where: Path) -> Target:
    if kind == "state":
        target: Target = StateDir(where)
    else:
        target = DirectoryTarget(where)
        target.prepare()
        (target.root / "etc-hostname").write_text("bench\n")
    target.prepare()
    return target


def build(kind: str, size_name: str, workdir: Path) -> Setup:
    target = make_target(kind, workdir / f"{kind}-{size_name}")
    log = EventLog.open(target.state_dir / "log.db", durable=True)
    store = SnapshotStore(target.state_dir / "snapshots", durable=True)
    rec = Recorder(log, store, DataCache(), session="bench", durable=True, target=target)
    records = max(1, SIZES[size_name] // RECORD_BYTES)
    rec.cache.persistent["packages"] = {f"pkg{i:06d}": record(i, 0) for i in range(records)}
    # The first point records the whole cache (and writes a snapshot file): setup, not timed.
    rec.take_point("bench", When.BEFORE, fingerprint="bench", attempt=1)
    setup = Setup(f"{kind}:{size_name}", rec, records)
    for _ in range(3):
        setup.point()  # warm up
    return setup


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-point-", dir=args.workdir))
    try:
        setups = [build(kind, size, workdir) for kind in TARGETS for size in SIZES]
        if args.profile:
            chosen = next(s for s in setups if s.name == args.profile)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.rounds * args.points):
                chosen.point()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            return
        for round_no in range(args.rounds):
            # rotate the order every round, so no size always runs first
            shift = round_no % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                for _ in range(args.points):
                    setup.samples.append(setup.point())
        report(setups, args)
    finally:
        for setup in locals().get("setups", []):
            setup.recorder.log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def report(setups: list[Setup], args: argparse.Namespace) -> None:
    print(f"snapshot point after a 1 KB change: {args.rounds} rounds x {args.points} points "
          f"per size, durable log in {args.workdir or tempfile.gettempdir()}")
    print(f"{'target':<8}{'cache':>8}{'median ms':>12}{'p90 ms':>10}{'mean ms':>10}"
          f"{'vs 10KB':>10}")
    for kind in TARGETS:
        base = None
        for size in SIZES:
            s = next(x for x in setups if x.name == f"{kind}:{size}")
            ms = sorted(x * 1000 for x in s.samples)
            median = statistics.median(ms)
            p90 = ms[int(len(ms) * 0.9) - 1]
            base = median if base is None else base
            print(f"{kind:<8}{size:>8}{median:>12.2f}{p90:>10.2f}{statistics.fmean(ms):>10.2f}"
                  f"{median / base:>9.2f}x")
        ratio = (statistics.median(next(x for x in setups if x.name == f"{kind}:10MB").samples)
                 / statistics.median(next(x for x in setups if x.name == f"{kind}:10KB").samples))
        verdict = "meets" if ratio <= GOAL else "MISSES"
        print(f"{kind}: 10 MB / 10 KB = {ratio:.2f}x ({verdict} the {GOAL:.0f}x goal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 rounds instead of 40")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--points", type=int, default=5, help="points per size per round")
    parser.add_argument("--workdir", default=None, help="directory to measure in")
    parser.add_argument("--profile", metavar="TARGET:SIZE", default=None,
                        help="profile one configuration instead, e.g. state:10MB")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 8 if args.quick else 40
    run(args)


if __name__ == "__main__":
    main()
