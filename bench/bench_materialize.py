#!/usr/bin/env python3
"""Materializing the state at a snapshot point, against parsing the same state as one file.

A 10 MB persistent cache of ~1 KB package records is recorded, then 1,000 points
follow, each after the same 1 KB change (one record replaced). The first point
writes a snapshot file (the recorder's own policy writes the next one only after
as many bytes of changes as that file holds, so none follows here).

Reported, as medians of interleaved repetitions:

- ``orjson.loads`` of the 10 MB snapshot file's bytes (read from disk each time),
  the reference;
- materializing the last point: the file, 1,000 diffs folded from the log, and the
  digest check (the file's SHA-256 against the log, and the digest tree from the
  sums recorded with the file);
- the cost against the number of diffs since the last snapshot file (0, 10, 100,
  1,000), and with no files at all (the log alone);
- where the time goes: read + parse, fold, file hash, digest tree (from sums, and
  built entry by entry as the log alone needs it).

The target: materializing the last point costs at most 2x the parse.

Usage::

    python bench/bench_materialize.py            # 7 repetitions
    python bench/bench_materialize.py --quick    # 3 repetitions, 300 points
    python bench/bench_materialize.py --profile  # cProfile of materializing the last point
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from installengine.eventlog import EventLog
from installengine.snapshots import (
    DataCache,
    DigestTree,
    Recorder,
    SnapshotPoint,
    SnapshotStore,
    StateDir,
    When,
    apply,
    materialize,
    read_lineage,
)

CACHE_BYTES = 10_000_000
RECORD_BYTES = 1000
GOAL = 2.0


def record(i: int, generation: int) -> dict[str, Any]:
    files = [f"/usr/lib/pkg{i:06d}/file{j:02d}.so.{generation}" for j in range(28)]
    return {"name": f"pkg{i:06d}", "version": f"1.{generation}", "files": files,
            "size": i * 17 + generation}


def timed(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def build(workdir: Path, points: int) -> tuple[Recorder, list[SnapshotPoint]]:
    target = StateDir(workdir / "state")
    target.prepare()
    # Durability does not change what materializing reads; a volatile log builds faster.
    log = EventLog.open(target.state_dir / "log.db", durable=False)
    store = SnapshotStore(target.state_dir / "snapshots", durable=False)
    rec = Recorder(log, store, DataCache(), session="bench", durable=True, target=target)
    records = CACHE_BYTES // RECORD_BYTES
    rec.cache.persistent["packages"] = {f"pkg{i:06d}": record(i, 0) for i in range(records)}
    taken = [rec.take_point("bench", When.BEFORE, fingerprint="bench", attempt=1)]
    packages = rec.cache.persistent["packages"]
    for n in range(1, points + 1):
        i = (n * 7919) % records
        packages[f"pkg{i:06d}"] = record(i, n)
        taken.append(rec.take_point("bench", When.COMPLETED, fingerprint="bench", attempt=1))
    return rec, taken


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-materialize-", dir=args.workdir))
    try:
        rec, taken = build(workdir, args.points)
        files = rec.store.files()
        assert len(files) == 1, files
        assert files[0].seq == taken[0].seq, files
        file = files[0]
        lineage = read_lineage(rec.log)
        last = taken[-1]

        def parse() -> Any:
            return orjson.loads(file.path.read_bytes())

        def at(point: SnapshotPoint, store: SnapshotStore | None = rec.store) -> Any:
            return materialize(rec.log, lineage, point.seq, store)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.repeat):
                at(last)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            return

        state = parse()

        def fold_diffs() -> Any:
            s: Any = state
            for p in taken[1:]:
                for seq in p.diffs:
                    ev = rec.log.get(seq)
                    s = apply(s, ev.data["patch"])
            return s

        rows = {
            "parse the 10 MB file (orjson.loads)": timed(parse, args.repeat),
            f"materialize the last point (file + {args.points} diffs)": timed(
                lambda: at(last), args.repeat),
        }
        steps = [k for k in (0, 10, 100, 1000) if k <= args.points]
        by_diffs = {k: timed(lambda k=k: at(taken[k]), args.repeat) for k in steps}
        log_only = timed(lambda: at(last, None), max(1, args.repeat // 2))
        breakdown = {
            "read + parse the file": rows["parse the 10 MB file (orjson.loads)"],
            f"fetch + fold {args.points} diffs from the log": timed(fold_diffs, args.repeat),
            "SHA-256 of the file's bytes (what the log vouches for)": timed(
                lambda: hashlib.sha256(file.path.read_bytes()).digest(), args.repeat),
            "the digest tree from the sums the log recorded": timed(
                lambda: DigestTree.from_sums(state, lineage.stored[file.seq]["sums"]),
                args.repeat),
            "the digest tree built entry by entry (no sums: the log alone)": timed(
                lambda: DigestTree(state), args.repeat),
        }
        size_mb = file.size / 1e6
        print(f"materialize: {size_mb:.1f} MB cache, {args.points} points of a 1 KB change "
              f"after its snapshot file; medians of {args.repeat}")
        for name, value in rows.items():
            print(f"  {name:<52}{value * 1000:>9.1f} ms")
        ratio = rows[f"materialize the last point (file + {args.points} diffs)"] / rows[
            "parse the 10 MB file (orjson.loads)"]
        print(f"  materialize / parse = {ratio:.2f}x "
              f"({'meets' if ratio <= GOAL else 'MISSES'} the {GOAL:.0f}x goal)")
        print("cost against the number of diffs since the snapshot file:")
        for k, value in by_diffs.items():
            print(f"  {k:>5} diffs{value * 1000:>12.1f} ms")
        print(f"  no file: the log alone, {args.points + 1} diffs incl. the 10 MB first one"
              f"{log_only * 1000:>9.1f} ms")
        print("where the time goes:")
        for name, value in breakdown.items():
            print(f"  {name:<64}{value * 1000:>9.1f} ms")
        rec.log.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 300 points")
    parser.add_argument("--points", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--workdir", default=None, help="directory to measure in")
    parser.add_argument("--profile", action="store_true",
                        help="profile materializing the last point instead")
    args = parser.parse_args()
    args.points = args.points or (300 if args.quick else 1000)
    args.repeat = args.repeat or (3 if args.quick else 7)
    run(args)


if __name__ == "__main__":
    main()
