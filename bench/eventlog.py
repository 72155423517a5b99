#!/usr/bin/env python3
"""What the event log costs: durable appends against the fsync floor, and indexed queries.

Measured in one run, side by side:

* the floor: appending 200 bytes to a plain file and fsyncing it;
* a durable single-event ``append`` and a durable 5-event ``append_many``;
* queries over a log of 1,000,000 events by checkpoint, by kind and time range, and
  by session: the time to the first 100 matching events, and to iterate all of them,
  with SQLite's ``EXPLAIN QUERY PLAN`` for the statement the log issues.

Targets: a durable 5-event transaction at most 3x the fsync floor; a filtered query
(first 100 events) within 50 ms. This is a report, not a test: it never fails.

    python bench/eventlog.py            # full run, a million events
    python bench/eventlog.py --quick    # a smoke run, 100,000 events
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from installengine.eventlog import EventKind, EventLog

PAYLOAD = 200  # bytes of JSON per event, and per raw write
APPEND_TARGET = 3.0
QUERY_TARGET_MS = 50.0


def median_ms(run: Callable[[], object], reps: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


# -- appends -----------------------------------------------------------------------------------


def raw_fsync_append(directory: Path) -> Callable[[], object]:
    fd = os.open(directory / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * (PAYLOAD - 1) + b"\n"

    def run() -> None:
        os.write(fd, record)
        os.fsync(fd)

    return run


def raw_sqlite_insert(directory: Path) -> Callable[[], object]:
    """One INSERT and COMMIT in WAL with synchronous=FULL, no indexes: SQLite's own floor."""
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data TEXT)")
    data = "x" * PAYLOAD

    def run() -> None:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (data) VALUES (?)", (data,))
        conn.execute("COMMIT")

    return run


def _data(i: int) -> dict[str, Any]:
    # About PAYLOAD bytes once serialised: a cache diff of a realistic size.
    return {"op": "replace", "path": f"/disks/{i % 8}/partitions", "value": "p" * (PAYLOAD - 58)}


def durable_append(log: EventLog) -> Callable[[], object]:
    counter = itertools.count()
    return lambda: log.append(EventKind.CACHE_CHANGED, session="bench", checkpoint="partition",
                              data=_data(next(counter)))


def durable_append_many(log: EventLog, n: int = 5) -> Callable[[], object]:
    counter = itertools.count()

    def run() -> None:
        i = next(counter)
        log.append_many([{"kind": EventKind.CACHE_CHANGED, "session": "bench", "checkpoint": "format",
                          "data": _data(i * n + j)} for j in range(n)])

    return run


# -- the big log -------------------------------------------------------------------------------

SESSION_EVENTS = 5000  # events per session
CHECKPOINTS = 50  # registered checkpoints, cycled within each session
RUN = ([EventKind.CHECKPOINT_STARTED] + [EventKind.CACHE_CHANGED] * 6
       + [EventKind.SNAPSHOT_TAKEN, EventKind.CHECKPOINT_COMPLETED])


def _records(start: int, count: int) -> Iterator[dict[str, Any]]:
    """Events shaped like installs: each checkpoint starts, changes the cache, snapshots, completes."""
    for i in range(start, start + count):
        execution, step = divmod(i, len(RUN))
        yield {"kind": RUN[step], "session": f"session-{i // SESSION_EVENTS:04d}",
               "checkpoint": f"checkpoint-{execution % CHECKPOINTS:02d}", "data": {"i": i, "n": step}}


def build_log(path: Path, events: int, batch: int) -> float:
    """Append ``events`` in ``batch``-sized transactions on a volatile log; return seconds."""
    started = time.perf_counter()
    with EventLog.open(path, durable=False) as log:
        for start in range(0, events, batch):
            log.append_many(list(_records(start, min(batch, events - start))))
    return time.perf_counter() - started


def explain(log: EventLog, run: Callable[[], object]) -> list[tuple[str, str]]:
    """Each SELECT that ``run`` makes the log execute, with SQLite's plan for it."""
    statements: list[str] = []
    conn = log._conn  # the bench looks inside; docs and examples never do
    conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return [(sql, "; ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")))
            for sql in statements if sql.lstrip().upper().startswith("SELECT")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 100,000 events")
    parser.add_argument("--events", type=int, help="events in the query log (default 1,000,000)")
    parser.add_argument("--reps", type=int, help="repetitions per append measurement")
    parser.add_argument("--dir", type=Path, help="where to put the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    parser.add_argument("--query-log", type=Path,
                        help="query this log (one kept from an earlier run) instead of building one")
    args = parser.parse_args(argv)
    events = args.events or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (60 if args.quick else 400)
    query_reps = 5 if args.quick else 15

    directory = Path(tempfile.mkdtemp(prefix="bench-eventlog-", dir=args.dir))
    try:
        print(f"installengine event log bench: python {platform.python_version()}, "
              f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")
        print(f"files in {directory}")
        print()

        # Appends: take one sample of each in turn, so that the disk's drift and other
        # load on the machine hit all of them alike.
        log = EventLog.open(directory / "durable.db", durable=True)
        runs = {"fsync": raw_fsync_append(directory), "sqlite": raw_sqlite_insert(directory),
                "one": durable_append(log), "five": durable_append_many(log)}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for turn in range(reps + 20):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                if turn >= 20:  # warm-up: the first WAL frames, the page cache
                    samples[name].append((time.perf_counter() - started) * 1000)
        log.close()
        floor = statistics.median(samples["fsync"])
        print(f"appends, durable (synchronous=FULL), {PAYLOAD} B each; median of {reps} per row, "
              "taken in turn")
        print(f"  {'':44} {'median':>10} {'p90':>10} {'x fsync':>8}")
        for label, name in (("raw write + os.fsync of 200 B (the floor)", "fsync"),
                            ("raw SQLite INSERT+COMMIT, WAL, FULL, no index", "sqlite"),
                            ("EventLog.append, 1 event", "one"),
                            ("EventLog.append_many, 5 events", "five")):
            ms = statistics.median(samples[name])
            p90 = statistics.quantiles(samples[name], n=10)[-1]
            print(f"  {label:44} {ms:8.3f} ms {p90:7.3f} ms {ms / floor:7.2f}x")
        five = statistics.median(samples["five"]) / floor
        verdict = "met" if five <= APPEND_TARGET else "MISSED"
        print(f"  target: 5-event transaction <= {APPEND_TARGET:g}x the floor: {five:.2f}x, {verdict}")
        print()

        batch = 2000
        if args.query_log:
            path = args.query_log
            with EventLog.open(path, readonly=True) as existing:
                events = len(existing)
            print(f"query log: {path}, {events:,} events, {path.stat().st_size / 2**20:.0f} MiB")
        else:
            path = directory / "million.db"
            seconds = build_log(path, events, batch)
            print(f"query log: {events:,} events appended in {events // batch:,} append_many "
                  f"transactions of {batch:,} (volatile) in {seconds:.1f} s "
                  f"({events / seconds:,.0f} events/s), {path.stat().st_size / 2**20:.0f} MiB")

        with EventLog.open(path, readonly=True) as audit:
            mid = audit.get(events // 2)
            end = audit.get(events // 2 + events // 100)
            assert mid is not None
            assert end is not None
            since, until = datetime.fromisoformat(mid.ts), datetime.fromisoformat(end.ts)
            session = f"session-{(events // 2) // SESSION_EVENTS:04d}"
            first = audit.get(1)
            assert first is not None
            first_ts = first.ts
            # (label, filters, counts toward the target)
            queries: list[tuple[str, dict[str, Any], bool]] = [
                ("by checkpoint", {"checkpoint": "checkpoint-17"}, True),
                ("by kind and time range (1% of the log)",
                 {"kind": EventKind.CHECKPOINT_COMPLETED, "since": since, "until": until}, True),
                ("by kind, common, and time range (1%)",
                 {"kind": EventKind.CACHE_CHANGED, "since": since, "until": until}, True),
                ("by session", {"session": session}, True),
                ("by session, newest first", {"session": session, "newest_first": True}, True),
                ("by time range only (1%)", {"since": since, "until": until}, False),
                ("since the first event (the whole log)", {"since": first_ts}, False),
            ]
            print(f"  {'':40} {'matches':>9} {'first 100':>10} {'all':>10}")
            plans = []
            worst = 0.0
            for label, filters, targeted in queries:
                matches = sum(1 for _ in audit.query(**filters))
                first = median_ms(lambda f=filters: list(audit.query(**f, limit=100)),
                                  query_reps, warmup=1)
                full = median_ms(lambda f=filters: sum(1 for _ in audit.query(**f)),
                                 max(1, query_reps // 5) if matches > 100_000 else query_reps, warmup=0)
                if targeted:
                    worst = max(worst, first)
                print(f"  {label:40} {matches:9,} {first:7.2f} ms {full:7.1f} ms")
                plans.append((label, explain(audit, lambda f=filters: list(audit.query(**f, limit=100)))))
            verdict = "met" if worst <= QUERY_TARGET_MS else "MISSED"
            print(f"  target: first 100 matching events <= {QUERY_TARGET_MS:g} ms (first five rows): "
                  f"worst {worst:.2f} ms, {verdict}")
            print("  ('first 100': query(..., limit=100) as a list; 'all': iterating every match,"
                  " each parsed into an Event)")
            print()
            print("EXPLAIN QUERY PLAN of every statement the first-100 query issues:")
            for label, statements in plans:
                print(f"  {label}:")
                for sql, plan in statements:
                    print(f"    {sql}")
                    print(f"      -> {plan}")
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
