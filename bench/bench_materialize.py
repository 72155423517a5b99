#!/usr/bin/env python3
"""Materializing the state at a snapshot point, against parsing the same state as one file.

A 10 MB persistent cache of ~1 KB package records is recorded, then 1,000 points
follow, each after the same 1 KB change (one record replaced). As the recorder
stores it, the first point has no snapshot file (its own diff holds the whole
state, and the log records the digest tree's sums with it), and none follows:
the policy writes a file only after as many bytes of changes as the state holds.
A second log is built with a snapshot file at the first point, the way a later
point gets one.

Reported, as medians of repetitions:

- reading and parsing one 10 MB JSON file of the same state, the reference;
- materializing the last point as recorded: the first diff and 1,000 more folded
  from the log, and the digest check (the digest tree from the recorded sums);
- the same from the snapshot file (its SHA-256 checked against the log) and the
  1,000 diffs;
- the cost against the number of diffs since the first point (0, 10, 100, 1,000);
- where the time goes: read + parse, fold, file hash, digest tree (from sums, and
  built entry by entry).

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
from installengine.snapshots import recorder as recorder_module

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


def build(workdir: Path, points: int, *, file_first: bool) -> tuple[Recorder, list[SnapshotPoint]]:
    """A log of a 10 MB first point and ``points`` 1 KB changes after it.

    As the recorder stores it, the first point has no snapshot file: its own diff
    holds the whole state, and the log records the digest tree's sums with it.
    With ``file_first`` a snapshot file is written for the first point too, as the
    recorder does for a later point once enough has changed since the last file.
    """
    target = StateDir(workdir / "state")
    target.prepare()
    # Durability does not change what materializing reads; a volatile log builds faster.
    log = EventLog.open(target.state_dir / "log.db", durable=False)
    store = SnapshotStore(target.state_dir / "snapshots", durable=False)
    rec = Recorder(log, store, DataCache(), session="bench", durable=True, target=target)
    records = CACHE_BYTES // RECORD_BYTES
    rec.cache.persistent["packages"] = {f"pkg{i:06d}": record(i, 0) for i in range(records)}
    taken = [rec.take_point("bench", When.BEFORE, fingerprint="bench", attempt=1)]
    if file_first:
        rec._write_file(taken[0])  # the cache still holds the first point's state
    packages = rec.cache.persistent["packages"]
    for n in range(1, points + 1):
        i = (n * 7919) % records
        packages[f"pkg{i:06d}"] = record(i, n)
        taken.append(rec.take_point("bench", When.COMPLETED, fingerprint="bench", attempt=1))
    return rec, taken


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-materialize-", dir=args.workdir))
    try:
        rec, taken = build(workdir / "as-recorded", args.points, file_first=False)
        # The policy before the count of diffs: files by bytes of change alone, so none
        # follows the first point's here, and a resume folds every diff since it.
        saved = recorder_module.MIN_DIFFS_BETWEEN_FILES
        recorder_module.MIN_DIFFS_BETWEEN_FILES = 10**9
        try:
            filed, filed_taken = build(workdir / "with-file", args.points, file_first=True)
        finally:
            recorder_module.MIN_DIFFS_BETWEEN_FILES = saved
        (file,) = filed.store.files()
        assert file.seq == filed_taken[0].seq, file
        layout = [taken.index(next(p for p in taken if p.seq == f.seq)) for f in rec.store.files()]
        lineage, filed_lineage = read_lineage(rec.log), read_lineage(filed.log)
        last = taken[-1]
        # The reference: one JSON file of the same 10 MB state, read and parsed.
        reference = workdir / "state.json"
        reference.write_bytes(file.path.read_bytes())

        def parse() -> Any:
            return orjson.loads(reference.read_bytes())

        def at(point: SnapshotPoint) -> Any:
            return materialize(rec.log, lineage, point.seq, rec.store)

        def at_filed(point: SnapshotPoint) -> Any:
            return materialize(filed.log, filed_lineage, point.seq, filed.store)

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

        since = args.points - (layout[-1] if layout else 0)
        headline = (f"materialize the last point, as recorded ({'file' if layout else 'log'}"
                    f" + {since} diffs)")
        rows = {
            "parse one 10 MB JSON file (read + orjson.loads)": timed(parse, args.repeat),
            headline: timed(lambda: at(last), args.repeat),
            f"files by bytes of change alone: first point's file + {args.points} diffs": timed(
                lambda: at_filed(filed_taken[-1]), args.repeat),
        }
        steps = [k for k in (0, 10, 100, 1000) if k <= args.points]
        by_diffs = {k: timed(lambda k=k: at(taken[k]), args.repeat) for k in steps}
        breakdown = {
            "read + parse the state": rows["parse one 10 MB JSON file (read + orjson.loads)"],
            f"fetch + fold {args.points} diffs from the log": timed(fold_diffs, args.repeat),
            "SHA-256 of a file's bytes (what the log vouches for)": timed(
                lambda: hashlib.sha256(file.path.read_bytes()).digest(), args.repeat),
            "the digest tree from the sums the log recorded": timed(
                lambda: DigestTree.from_sums(state, lineage.stored[taken[0].seq]["sums"]),
                args.repeat),
            "the digest tree built entry by entry (no sums recorded)": timed(
                lambda: DigestTree(state), args.repeat),
        }
        size_mb = file.size / 1e6
        print(f"materialize: {size_mb:.1f} MB cache, {args.points} points of a 1 KB change "
              f"after the first point; medians of {args.repeat}")
        print(f"  the recorder wrote snapshot files at points {layout or 'none'} "
              "(the first point's state is in the log)")
        for name, value in rows.items():
            print(f"  {name:<62}{value * 1000:>9.1f} ms")
        ratio = rows[headline] / rows["parse one 10 MB JSON file (read + orjson.loads)"]
        print(f"  materialize / parse = {ratio:.2f}x "
              f"({'meets' if ratio <= GOAL else 'MISSES'} the {GOAL:.0f}x goal)")
        print("materializing point k (the diffs folded are those since the nearest file "
              "before it, or since the first point):")
        for k, value in by_diffs.items():
            print(f"  point {k:>5}{value * 1000:>12.1f} ms")
        print("where the time goes:")
        for name, value in breakdown.items():
            print(f"  {name:<64}{value * 1000:>9.1f} ms")
        rec.log.close()
        filed.log.close()
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
