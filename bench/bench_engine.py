#!/usr/bin/env python3
"""Per-checkpoint engine overhead against the cost of one fsync'd 200-byte append.

Each checkpoint replaces one ~1 KB record of the persistent cache. The cache
is a dict of ~1 KB package-like records, so a 10 MB cache holds about ten
thousand of them. Every configuration keeps one engine open on a durable
target: ``state:`` (the log and snapshot files, no filesystem copies) and
``dir:`` with an empty root (a filesystem snapshot per point, of nothing). The
floor is a raw ``write`` of 200 bytes plus ``fsync`` on a file in the same
directory tree; for reference, one bare SQLite WAL ``synchronous=FULL`` commit
of two small rows is measured too (a snapshot point is one such commit, and a
checkpoint has two points).

A sample is the time from one checkpoint's start to the next one's start in
the same execution: both snapshot points, the checkpoint's own edit and the
engine's bookkeeping, without the per-execution events. Configurations run in
rounds, a chunk of checkpoints each, in an order that rotates every round, with
floor samples taken between them, so machine noise falls on all alike.

Usage::

    python bench/bench_engine.py              # 30 rounds of 8 checkpoints per configuration
    python bench/bench_engine.py --quick      # 8 rounds of 6
    python bench/bench_engine.py --profile state:10M   # where the time goes (cProfile)
    python bench/bench_engine.py --workdir /var/tmp    # the filesystem to measure on

The target is a median at most 5x the floor at every size.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from installengine.statemachine import Context, InstallEngine, Status

SIZES = {"10K": 10_000, "1M": 1_000_000, "10M": 10_000_000}
TARGETS = ("state", "dir")
RECORD_BYTES = 1000
TARGET_RATIO = 5.0

#: checkpoint start times of the running chunk, appended by the checkpoint itself
STARTS: list[float] = []


def record(i: int, generation: int = 0) -> dict[str, Any]:
    """A ~1 KB package record, different for each generation."""
    files = [f"/usr/lib/pkg{i:06d}/file{j:02d}.so.{generation}" for j in range(14)]
    return {"name": f"pkg{i:06d}", "version": f"1.{generation}.{i % 97}",
            "sha256": f"{(i * 2654435761 + generation) & 0xffffffff:08x}" * 8,
            "files": files, "size": i * 1024 + generation}


def make_records(size: int) -> dict[str, Any]:
    per = len(repr(record(0)).encode())
    return {f"r{i:06d}": record(i) for i in range(max(1, size // per))}


def change_one(ctx: Context, index: int) -> None:
    """The benchmark's checkpoint: replace one ~1 KB record."""
    STARTS.append(time.perf_counter())
    records = ctx.cache["records"]
    key = f"r{index % len(records):06d}"
    ctx.cache["records"][key] = record(index % len(records), generation=index + 1)


@dataclass
class Config:
    target: str
    size: str
    engine: InstallEngine
    names: list[str]
    next: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.target}:{self.size}"

    def run_chunk(self, count: int) -> None:
        """Run the next ``count`` checkpoints and keep count-1 per-checkpoint samples."""
        STARTS.clear()
        stop = self.next + count
        pause = self.names[stop] if stop < len(self.names) else None
        result = self.engine.execute(pause_before=pause)
        if result.status not in (Status.PAUSED, Status.SUCCESS):
            raise SystemExit(f"{self.label}: the run ended {result.status.name}: {result.errors}")
        self.next = stop
        self.samples.extend(b - a for a, b in pairwise(STARTS))


def open_config(target: str, size: str, workdir: Path, checkpoints: int, warmup: int) -> Config:
    where = workdir / f"{target}-{size}"
    spec = f"{target}:{where}"
    engine = InstallEngine(spec)
    engine.cache["records"] = make_records(SIZES[size])
    names = [f"c{i:05d}" for i in range(warmup + checkpoints + 1)]
    for i, name in enumerate(names):
        engine.register(name, change_one, args=[i])
    config = Config(target, size, engine, names)
    # The first point records the whole cache as the application's change, and
    # may write the first snapshot file: a one-off, not a per-checkpoint cost.
    config.run_chunk(warmup)
    config.samples.clear()
    return config


def fsync_floor(path: Path, count: int) -> list[float]:
    payload = b"x" * 199 + b"\n"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, payload)
            os.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return samples


def sqlite_commits(db: sqlite3.Connection, count: int) -> list[float]:
    """One WAL ``synchronous=FULL`` commit of two ~1 KB rows: what one snapshot point must pay."""
    samples = []
    rows = [("snapshot-taken", "y" * 1200), ("checkpoint-started", "z" * 300)]
    for _ in range(count):
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (kind, data) VALUES (?, ?)", rows)
        db.execute("COMMIT")
        samples.append(time.perf_counter() - t0)
    return samples


def open_sqlite(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT, data TEXT)")
    db.execute("CREATE INDEX events_kind ON events (kind)")
    return db


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f}"


def report(configs: list[Config], floor: list[float], commits: list[float]) -> bool:
    """Print the table; ``x floor`` compares medians, ``x min`` the fastest samples."""
    floor_median, floor_min = statistics.median(floor), min(floor)
    print(f"{'configuration':<15}{'n':>5} {'median ms':>9} {'mean ms':>8} {'min ms':>8} "
          f"{'max ms':>8} {'x floor':>8} {'x min':>6}")
    rows = [("fsync 200 B", floor), ("sqlite commit", commits),
            *((c.label, c.samples) for c in configs)]
    ok = True
    for label, samples in rows:
        ratio = statistics.median(samples) / floor_median
        if label not in ("fsync 200 B", "sqlite commit"):
            ok = ok and ratio <= TARGET_RATIO
        print(f"{label:<15}{len(samples):>5} {ms(statistics.median(samples))} "
              f"{ms(statistics.fmean(samples))} {ms(min(samples))} {ms(max(samples))} "
              f"{ratio:8.2f} {min(samples) / floor_min:6.2f}")
    print()
    for target in TARGETS:
        row = [c for c in configs if c.target == target]
        if len(row) > 1:
            base = statistics.median(row[0].samples)
            ratios = ", ".join(f"{c.size} {statistics.median(c.samples) / base:.2f}x"
                               for c in row[1:])
            print(f"{target}: median against {row[0].size}: {ratios}")
    print(f"target: every median <= {TARGET_RATIO:.0f}x the fsync floor: "
          f"{'met' if ok else 'MISSED'}")
    return ok


def profile(label: str, workdir: Path, count: int) -> None:
    target, _, size = label.partition(":")
    if target not in TARGETS or size not in SIZES:
        raise SystemExit(f"--profile takes one of {', '.join(f'{t}:{s}' for t in TARGETS for s in SIZES)}")
    config = open_config(target, size, workdir, count, warmup=3)
    try:
        prof = cProfile.Profile()
        prof.enable()
        config.run_chunk(count)
        prof.disable()
        print(f"{label}: median {ms(statistics.median(config.samples))} ms per checkpoint "
              f"over {len(config.samples)}")
        stats = pstats.Stats(prof).sort_stats("cumulative")
        stats.print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
    finally:
        config.engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 rounds of 6 checkpoints")
    parser.add_argument("--rounds", type=int, help="rounds per configuration (default 30)")
    parser.add_argument("--chunk", type=int, help="checkpoints per round (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the targets and the floor file live")
    parser.add_argument("--profile", metavar="TARGET:SIZE",
                        help="profile one configuration instead (e.g. state:10M)")
    args = parser.parse_args(argv)
    # Short chunks interleave finely: fsync latency here swings with other
    # processes' writes, and a burst should fall on every configuration alike.
    rounds = args.rounds or (8 if args.quick else 30)
    chunk = args.chunk or (6 if args.quick else 8)
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-", dir=args.workdir))
    os.environ.setdefault("INSTALLENGINE_TMPDIR", str(workdir))
    try:
        if args.profile:
            profile(args.profile, workdir, chunk * 5)
            return 0
        print(f"python {sys.version.split()[0]}, {rounds} rounds x {chunk} checkpoints, "
              f"workdir {workdir}")
        configs = [open_config(t, s, workdir, rounds * chunk, warmup=3)
                   for t in TARGETS for s in SIZES]
        floor: list[float] = []
        commits: list[float] = []
        floor_file = workdir / "floor.bin"
        db = open_sqlite(workdir / "commits.db")
        try:
            for r in range(rounds):
                shift = r % len(configs)
                for config in configs[shift:] + configs[:shift]:
                    floor.extend(fsync_floor(floor_file, chunk // 2))
                    commits.extend(sqlite_commits(db, chunk // 4))
                    config.run_chunk(chunk)
            ok = report(configs, floor, commits)
        finally:
            db.close()
            for config in configs:
                config.engine.close()
        del ok  # a benchmark reports; it does not pass or fail
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
