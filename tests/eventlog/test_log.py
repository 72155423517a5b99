"""EventLog on real SQLite files: round trips, queries, bad input, copies, readers and threads."""

from __future__ import annotations

import ast
import math
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from installengine.eventlog import (
    CheckedJSON,
    EngineError,
    Event,
    EventKind,
    EventLog,
    LogIntegrityError,
    SchemaVersionError,
    UsageError,
    VerifyReport,
    canonical_json,
)
from installengine.eventlog.hashing import GENESIS_HASH, event_hash
from installengine.eventlog.log import BUSY_TIMEOUT_MS
from installengine.eventlog.schema import SCHEMA_VERSION

SESSIONS = ["3f2a00c0ffee", "b0b0b0b0b0b0", "c0c0c0c0c0c0"]
CHECKPOINTS = ["partition", "format", "configure"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                      max_size=3),
    max_leaves=12,
)
RECORD = st.fixed_dictionaries({
    "kind": st.sampled_from(list(EventKind)),
    "session": st.sampled_from(SESSIONS),
    "checkpoint": st.none() | st.sampled_from(CHECKPOINTS),
    "data": JSON,
})
BATCHES = st.lists(st.lists(RECORD, min_size=1, max_size=5), max_size=8)
FILE_EXAMPLES = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])


def append_batches(log: EventLog, batches: list[list[dict[str, Any]]]) -> list[Event]:
    """Append each batch: alone with append(), several with append_many()."""
    returned: list[Event] = []
    for batch in batches:
        if len(batch) == 1:
            returned.append(log.append(**batch[0]))
        else:
            returned.extend(log.append_many(batch))
    return returned


def as_stored(event: Event) -> tuple[Any, ...]:
    """An event with its data as canonical JSON, so that 1, 1.0 and True stay distinct."""
    return (event.seq, event.session, event.ts, event.kind, event.checkpoint,
            canonical_json(event.data), event.prev_hash, event.hash)


# -- round trip ------------------------------------------------------------------------------


@FILE_EXAMPLES
@given(batches=BATCHES)
def test_events_come_back_exactly_in_order_with_gap_free_seq(
        new_log_path: Callable[[], Path], batches: list[list[dict[str, Any]]]) -> None:
    path = new_log_path()
    records = [record for batch in batches for record in batch]
    with EventLog.open(path, durable=False) as log:
        returned = append_batches(log, batches)
        stored = list(log.query())
        assert [as_stored(e) for e in stored] == [as_stored(e) for e in returned]
        assert [(e.kind, e.session, e.checkpoint, canonical_json(e.data)) for e in stored] == [
            (r["kind"], r["session"], r["checkpoint"], canonical_json(r["data"])) for r in records]
        assert [e.seq for e in stored] == list(range(1, len(records) + 1))
        assert all(type(e.kind) is str for e in stored)
        hashes = [GENESIS_HASH] + [e.hash for e in stored]
        assert [e.prev_hash for e in stored] == hashes[:-1]
        assert log.head == (len(stored), hashes[-1])
        assert len(log) == len(stored)
        assert [log.get(e.seq) for e in stored] == stored
        assert log.get(0) is None
        assert log.get(len(stored) + 1) is None
        assert log.verify() == VerifyReport(True, None, None, len(stored))
    with EventLog.open(path, readonly=True) as audit:
        assert [as_stored(e) for e in audit.query()] == [as_stored(e) for e in stored]
        assert audit.head == (len(stored), hashes[-1])


def test_one_append_many_is_one_transaction_with_one_timestamp(log: EventLog) -> None:
    events = log.append_many([{"kind": EventKind.CHECKPOINT_STARTED, "session": "s", "checkpoint": c}
                              for c in CHECKPOINTS])
    assert len({e.ts for e in events}) == 1
    ts = datetime.fromisoformat(events[0].ts)
    assert ts.utcoffset() == timedelta(0)
    assert events[0].ts.endswith("+00:00")
    assert abs(datetime.now(UTC) - ts) < timedelta(minutes=1)


def test_append_many_of_nothing_writes_nothing(log: EventLog) -> None:
    assert log.append_many([]) == []
    assert log.head == (0, GENESIS_HASH)


def test_an_event_repr_is_valid_python(log: EventLog) -> None:
    event = log.append(EventKind.CHECKPOINT_FAILED, session="s", checkpoint="format",
                       data={"type": "ValueError", "message": "bad 'disk'", "n": [1, 2.5, None]})
    # Valid Python, read back without running it: a call of Event with literal arguments.
    call = ast.parse(repr(event), mode="eval").body
    assert isinstance(call, ast.Call)
    assert isinstance(call.func, ast.Name)
    assert call.func.id == "Event"
    assert not call.args
    assert Event(**{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords
                    if kw.arg is not None}) == event


def test_reopening_continues_the_chain(log_path: Path) -> None:
    with EventLog.open(log_path) as first:
        a = first.append(EventKind.SESSION_STARTED, session="s1")
        install_id = first.install_id
    with EventLog.open(log_path) as second:
        b = second.append(EventKind.SESSION_STARTED, session="s2")
        assert (b.seq, b.prev_hash) == (2, a.hash)
        assert second.install_id == install_id
        assert second.verify().ok


def test_meta_records_schema_install_id_and_creation(log: EventLog) -> None:
    assert log.schema_version == SCHEMA_VERSION
    assert len(log.install_id) == 32
    int(log.install_id, 16)
    assert datetime.fromisoformat(log.created).utcoffset() == timedelta(0)


def test_a_new_log_is_private_to_its_owner(log: EventLog, log_path: Path) -> None:
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600


def test_the_schema_is_what_the_docs_describe(log: EventLog, log_path: Path) -> None:
    conn = sqlite3.connect(log_path)
    try:
        columns = [(r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(events)")]
        indexes = {r[1]: [c[2] for c in conn.execute(f"PRAGMA index_info({r[1]})")]
                   for r in conn.execute("PRAGMA index_list(events)")}
        meta_keys = {r[0] for r in conn.execute("SELECT key FROM meta")}
    finally:
        conn.close()
    assert columns == [("seq", "INTEGER", 0, 1), ("session", "TEXT", 1, 0), ("ts", "TEXT", 1, 0),
                       ("kind", "TEXT", 1, 0), ("checkpoint", "TEXT", 0, 0), ("data", "TEXT", 1, 0),
                       ("prev_hash", "TEXT", 1, 0), ("hash", "TEXT", 1, 0)]
    assert indexes == {"events_by_session": ["session", "seq"], "events_by_kind": ["kind", "seq"],
                       "events_by_checkpoint": ["checkpoint", "seq"], "events_by_ts": ["ts"]}
    assert meta_keys == {"schema_version", "install_id", "created", "head_seq", "head_hash"}


# -- queries -------------------------------------------------------------------------------


def _expected(events: list[Event], *, session: str | None = None, kind: str | None = None,
              checkpoint: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int | None = None,
              newest_first: bool = False, after_seq: int | None = None) -> list[Event]:
    """The query's contract, written as a plain filter over the list."""
    chosen = [e for e in events
              if (session is None or e.session == session)
              and (kind is None or e.kind == kind)
              and (checkpoint is None or e.checkpoint == checkpoint)
              and (since is None or datetime.fromisoformat(e.ts) >= since)
              and (until is None or datetime.fromisoformat(e.ts) < until)
              and (after_seq is None or e.seq > after_seq)]
    if newest_first:
        chosen.reverse()
    return chosen if limit is None else chosen[:limit]


def _time_bound(data: st.DataObject, events: list[Event], label: str) -> tuple[Any, datetime | None]:
    """A bound near a stored ts, passed as a string or a datetime in some time zone."""
    if not events or data.draw(st.booleans(), label=f"{label} is None"):
        return None, None
    base = datetime.fromisoformat(data.draw(st.sampled_from([e.ts for e in events]), label=label))
    moment = base + timedelta(microseconds=data.draw(st.sampled_from([-1, 0, 0, 1]), label="nudge"))
    zone = timezone(timedelta(hours=data.draw(st.integers(-12, 12), label="zone")))
    shown = moment.astimezone(zone)
    given_as = shown.isoformat() if data.draw(st.booleans(), label="as string") else shown
    return given_as, moment


@FILE_EXAMPLES
@given(batches=BATCHES, data=st.data())
def test_query_filters_agree_with_filtering_the_list(
        new_log_path: Callable[[], Path], batches: list[list[dict[str, Any]]],
        data: st.DataObject) -> None:
    with EventLog.open(new_log_path(), durable=False) as log:
        events = append_batches(log, batches)
        events = list(log.query())
        for _ in range(5):
            filters: dict[str, Any] = {
                "session": data.draw(st.none() | st.sampled_from([*SESSIONS, "nobody"])),
                "kind": data.draw(st.none() | st.sampled_from(list(EventKind))),
                "checkpoint": data.draw(st.none() | st.sampled_from([*CHECKPOINTS, "other"])),
                "limit": data.draw(st.none() | st.integers(0, len(events) + 2)),
                "newest_first": data.draw(st.booleans()),
            }
            since, since_dt = _time_bound(data, events, "since")
            until, until_dt = _time_bound(data, events, "until")
            got = list(log.query(**filters, since=since, until=until))
            assert got == _expected(events, **filters, since=since_dt, until=until_dt), filters


def test_queries_page_past_a_thousand_matches(log: EventLog) -> None:
    log.append_many([{"kind": EventKind.CACHE_CHANGED if i % 7 else EventKind.SNAPSHOT_TAKEN,
                      "session": SESSIONS[i % 2], "checkpoint": CHECKPOINTS[i % 3], "data": {"i": i}}
                     for i in range(3500)])
    events = list(log.query())
    assert [e.seq for e in events] == list(range(1, 3501))
    for filters in ({"session": SESSIONS[0]}, {"session": SESSIONS[1], "newest_first": True},
                    {"kind": EventKind.CACHE_CHANGED, "limit": 2345},
                    {"checkpoint": "format", "newest_first": True, "limit": 1001},
                    {"after_seq": 999}, {"after_seq": 1200, "newest_first": True, "limit": 1500},
                    {"limit": 1000}, {"newest_first": True}):
        assert list(log.query(**filters)) == _expected(events, **filters), filters


def test_appending_while_iterating_a_query_does_not_deadlock(log: EventLog) -> None:
    log.append_many([{"kind": EventKind.CACHE_CHANGED, "session": "s"}] * 1500)
    seen = []
    for event in log.query():
        seen.append(event.seq)
        if event.seq == 10:
            log.append(EventKind.PAUSED, session="s")
    assert seen == list(range(1, 1502))


@pytest.mark.parametrize(
    ("filters", "words"),
    [({"since": datetime(2026, 1, 1)}, "timezone-aware"),
     ({"until": "yesterday"}, "not an ISO-8601 time"),
     ({"limit": -1}, "non-negative integer"),
     ({"limit": "10"}, "non-negative integer")],
)
def test_bad_query_arguments_are_usage_errors(log: EventLog, filters: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        list(log.query(**filters))
    assert "\n" not in str(caught.value)


def _plans(log: EventLog, **filters: Any) -> list[str]:
    """SQLite's plan for every SELECT that query(**filters) issues."""
    statements: list[str] = []
    log._conn.set_trace_callback(statements.append)
    try:
        list(log.query(**filters))
    finally:
        log._conn.set_trace_callback(None)
    return [" ".join(row[3] for row in log._conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements if sql.startswith("SELECT")]


def test_every_filter_is_served_by_an_index_without_sorting(log: EventLog) -> None:
    log.append_many([{"kind": EventKind.CACHE_CHANGED, "session": "s", "checkpoint": "c"}] * 3)
    ts = log.get(1).ts  # type: ignore[union-attr]
    for filters, expected in (
            ({"session": "s"}, ["USING INDEX events_by_session (session=?)"]),
            ({"kind": EventKind.CACHE_CHANGED}, ["USING INDEX events_by_kind (kind=?)"]),
            ({"checkpoint": "c", "newest_first": True}, ["USING INDEX events_by_checkpoint (checkpoint=?)"]),
            ({"since": ts, "until": "2999-01-01T00:00:00+00:00"},
             ["USING COVERING INDEX events_by_ts (ts>? AND ts<?)", "USING INTEGER PRIMARY KEY"]),
            ({"kind": EventKind.CACHE_CHANGED, "since": ts},
             ["USING COVERING INDEX events_by_ts (ts>?)", "USING INDEX events_by_kind (kind=? AND seq>?)"]),
            ({"session": "s", "until": "2999-01-01T00:00:00+00:00"},
             ["USING COVERING INDEX events_by_ts (ts<?)",
              "USING INDEX events_by_session (session=? AND seq>? AND seq<?)"])):
        plans = _plans(log, **filters)
        assert len(plans) == len(expected), (filters, plans)
        for plan, wanted in zip(plans, expected, strict=True):
            assert wanted in plan, (filters, plans)
            assert "TEMP B-TREE" not in plan, (filters, plans)


def _work(log: EventLog, **filters: Any) -> int:
    """SQLite virtual-machine steps (in hundreds) to iterate query(**filters): work, not time."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    log._conn.set_progress_handler(tick, 100)
    try:
        for _ in log.query(**filters):
            pass
    finally:
        log._conn.set_progress_handler(None, 0)
    return steps


@pytest.mark.parametrize("filters", [{"since": "2000-01-01T00:00:00+00:00"}, {"after_seq": 0},
                                     {"after_seq": 0, "newest_first": True},
                                     {"until": "2999-01-01T00:00:00+00:00", "newest_first": True},
                                     {"session": "s", "since": "2000-01-01T00:00:00+00:00"}])
def test_iterating_a_long_result_costs_linear_work(log: EventLog, filters: dict[str, Any]) -> None:
    # Each page must seek to where the last one ended, not scan again from the start.
    record = {"kind": EventKind.CACHE_CHANGED, "session": "s"}
    log.append_many([record] * 2000)
    small = _work(log, **filters)
    log.append_many([record] * 6000)
    large = _work(log, **filters)
    assert large / small < 5, (small, large)  # 4x the events; quadratic paging would be ~12x


def test_time_filters_stay_exact_when_the_clock_went_backwards(log_path: Path) -> None:
    # Write a valid chain whose ts jumps back and forth, as a clock set back would.
    with EventLog.open(log_path, durable=False):
        pass
    stamps = ["2026-03-01T10:00:00+00:00", "2026-03-01T12:00:00+00:00", "2026-03-01T09:00:00+00:00",
              "2026-03-01T11:00:00.500000+00:00", "2026-03-01T08:00:00+00:00",
              "2026-03-01T12:30:00+00:00", "2026-03-01T10:30:00+00:00"]
    conn = sqlite3.connect(log_path)
    prev = GENESIS_HASH
    with conn:
        for seq, ts in enumerate(stamps, start=1):
            kind = "paused" if seq % 2 else "cache-changed"
            h = event_hash(seq=seq, session="s", ts=ts, kind=kind, checkpoint=None, data_json="null",
                           prev_hash=prev)
            conn.execute("INSERT INTO events VALUES (?, 's', ?, ?, NULL, 'null', ?, ?)",
                         (seq, ts, kind, prev, h))
            prev = h
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (str(len(stamps)),))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
    conn.close()
    with EventLog.open(log_path, readonly=True) as log:
        assert log.verify().ok
        events = list(log.query())
        bounds = [None, *sorted(set(stamps)), "2026-03-01T10:15:00+00:00"]
        for since in bounds:
            for until in bounds:
                for kind in (None, "paused"):
                    for newest_first in (False, True):
                        got = list(log.query(since=since, until=until, kind=kind,
                                             newest_first=newest_first))
                        expected = _expected(
                            events, kind=kind, newest_first=newest_first,
                            since=None if since is None else datetime.fromisoformat(since),
                            until=None if until is None else datetime.fromisoformat(until))
                        assert got == expected, (since, until, kind)


# -- bad input -------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert isinstance(err, EngineError)
    assert message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("data", "path"),
    [({"disk": {"dev": PurePosixPath("/dev/sda")}}, "/disk/dev"),
     ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "/when"),
     ({"sizes": [1, 2, {3, 4}]}, "/sizes/2"),
     ({"pair": (1, 2)}, "/pair"),
     ({"ratio": math.nan}, "/ratio"),
     ({"ratio": math.inf}, "/ratio"),
     ({"name": "caf\udce9"}, "/name"),
     ({1: "x"}, "/")],
)
def test_non_json_data_is_refused_with_its_path_and_nothing_is_kept(
        log: EventLog, data: Any, path: str) -> None:
    kept = log.append(EventKind.SESSION_STARTED, session="s")
    with pytest.raises(UsageError) as caught:
        log.append(EventKind.CACHE_CHANGED, session="s", data=data)
    assert f"at {path} " in _one_line(caught.value)
    with pytest.raises(UsageError):
        log.append_many([{"kind": EventKind.PAUSED, "session": "s"},
                         {"kind": EventKind.CACHE_CHANGED, "session": "s", "data": data}])
    assert log.head == (1, kept.hash)
    assert [e.seq for e in log.query()] == [1]
    assert log.append(EventKind.PAUSED, session="s").seq == 2


@pytest.mark.parametrize(
    ("record", "words"),
    [({"kind": "checkpoint-done", "session": "s"}, "unknown event kind 'checkpoint-done'"),
     ({"kind": "Paused", "session": "s"}, "unknown event kind"),
     ({"kind": EventKind.PAUSED, "session": ""}, "session must be a non-empty string"),
     ({"kind": EventKind.PAUSED, "session": 7}, "session must be a non-empty string"),
     ({"kind": EventKind.PAUSED, "session": "s", "checkpoint": 3}, "checkpoint must be a string"),
     ({"kind": EventKind.PAUSED, "session": "s", "sesion": "t"}, "unknown event field")],
)
def test_bad_records_are_usage_errors(log: EventLog, record: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        log.append_many([record])
    _one_line(caught.value)
    assert log.head == (0, GENESIS_HASH)


def _fingerprint(path: Path) -> tuple[bytes, int, list[str]]:
    """The bytes and mtime of the file, and what lies next to it."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def _open_both_ways(path: Path) -> list[EngineError]:
    """Open for writing, then read-only; both must fail and leave the file as it was."""
    before = _fingerprint(path)
    errors: list[EngineError] = []
    for readonly in (False, True):
        with pytest.raises(EngineError) as caught:
            EventLog.open(path, readonly=readonly)
        _one_line(caught.value)
        errors.append(caught.value)
        after = _fingerprint(path)
        assert after[:2] == before[:2]
        if not readonly:
            assert after == before
        else:
            # A read-only connection to a WAL file may create the shared-memory index and
            # an empty WAL, and cannot remove them; it must not write anything to the log.
            extra = set(after[2]) - set(before[2])
            assert extra <= {f"{path.name}-wal", f"{path.name}-shm"}
            wal = path.with_name(f"{path.name}-wal")
            assert not wal.exists() or wal.stat().st_size == 0
    return errors


@pytest.mark.parametrize("content", [b"not a database\n" * 200, b"SQLite", b"\x00" * 4096])
def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(log_path: Path, content: bytes) -> None:
    log_path.parent.mkdir()
    log_path.write_bytes(content)
    for err in _open_both_ways(log_path):
        assert isinstance(err, LogIntegrityError)
        assert str(log_path) in str(err)


def test_a_sqlite_file_without_our_schema_is_refused_and_left_alone(log_path: Path) -> None:
    log_path.parent.mkdir()
    conn = sqlite3.connect(log_path)
    with conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
        conn.execute("INSERT INTO songs VALUES ('la')")
    conn.close()
    for err in _open_both_ways(log_path):
        assert isinstance(err, LogIntegrityError)
        assert "not an installengine log" in str(err)
    conn = sqlite3.connect(log_path)
    try:  # no migration ran: our tables were not added to someone else's database
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["songs"]
    finally:
        conn.close()


def _with_meta(path: Path, key: str, value: str) -> None:
    with EventLog.open(path) as log:
        log.append(EventKind.SESSION_STARTED, session="s")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.close()


def test_a_log_of_a_newer_schema_is_refused_and_left_alone(log_path: Path) -> None:
    _with_meta(log_path, "schema_version", str(SCHEMA_VERSION + 1))
    for err in _open_both_ways(log_path):
        assert isinstance(err, SchemaVersionError)
        assert (err.found, err.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
        assert str(err) == (f"log {log_path} has schema version {SCHEMA_VERSION + 1}; this "
                            f"installengine reads up to {SCHEMA_VERSION}: upgrade installengine")


def test_a_garbled_schema_version_is_refused_and_left_alone(log_path: Path) -> None:
    _with_meta(log_path, "schema_version", "one")
    for err in _open_both_ways(log_path):
        assert isinstance(err, LogIntegrityError)
        assert "'one'" in str(err)


def test_opening_a_missing_file_read_only_is_a_usage_error_and_creates_nothing(log_path: Path) -> None:
    with pytest.raises(UsageError, match="no log at") as caught:
        EventLog.open(log_path, readonly=True)
    _one_line(caught.value)
    assert not log_path.parent.exists()


def test_opening_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        EventLog.open(tmp_path)


def test_appending_to_a_read_only_log_is_a_usage_error(log_path: Path) -> None:
    with EventLog.open(log_path) as log:
        log.append(EventKind.SESSION_STARTED, session="s")
    before = _fingerprint(log_path)
    with EventLog.open(log_path, readonly=True) as audit:
        with pytest.raises(UsageError, match="read-only") as caught:
            audit.append(EventKind.PAUSED, session="s")
        _one_line(caught.value)
        with pytest.raises(UsageError, match="read-only"):
            audit.append_many([{"kind": EventKind.PAUSED, "session": "s"}])
        assert [e.seq for e in audit.query()] == [1]
    assert _fingerprint(log_path)[:2] == before[:2]


def test_a_closed_log_refuses_every_operation(log: EventLog) -> None:
    log.append(EventKind.SESSION_STARTED, session="s")
    log.close()
    log.close()  # closing twice is harmless
    for operation in (lambda: log.append(EventKind.PAUSED, session="s"), lambda: list(log.query()),
                      lambda: log.get(1), log.verify):
        with pytest.raises(UsageError, match="is closed"):
            operation()


def test_an_empty_existing_file_becomes_a_new_log(log_path: Path) -> None:
    # What a crash right after creating the file leaves behind.
    log_path.parent.mkdir()
    log_path.touch()
    with EventLog.open(log_path) as log:
        assert log.append(EventKind.SESSION_STARTED, session="s").seq == 1


# -- pragmas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("durable", "synchronous"), [(True, 2), (False, 1)])
def test_wal_and_synchronous_level_follow_durability(log_path: Path, durable: bool,
                                                     synchronous: int) -> None:
    with EventLog.open(log_path, durable=durable) as log:
        assert log.durable is durable
        conn = log._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous  # 2 FULL, 1 NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    other = sqlite3.connect(log_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
    finally:
        other.close()
    with EventLog.open(log_path, readonly=True) as audit:
        assert audit._conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS


# -- copies ----------------------------------------------------------------------------------


def test_copy_to_preserves_seq_and_hashes_and_verifies(log: EventLog, tmp_path: Path) -> None:
    log.append_many([{"kind": EventKind.CACHE_CHANGED, "session": "s", "checkpoint": c,
                      "data": {"op": "add", "path": f"/{c}"}} for c in CHECKPOINTS * 400])
    dest = tmp_path / "target" / ".installengine" / "log.db"
    log.copy_to(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    with EventLog.open(dest) as copy:
        assert list(copy.query()) == list(log.query())
        assert copy.head == log.head
        assert copy.install_id == log.install_id
        assert copy.verify() == VerifyReport(True, None, None, 1200)
        after = copy.append(EventKind.TARGET_ATTACHED, session="s", data={"target": "dir:/x"})
        assert (after.seq, after.prev_hash) == (1201, log.head[1])
        assert copy.verify().ok
    assert len(log) == 1200  # the original does not see the copy's appends


def test_a_read_only_log_can_be_copied(log_path: Path, tmp_path: Path) -> None:
    with EventLog.open(log_path) as log:
        log.append(EventKind.SESSION_STARTED, session="s")
    with EventLog.open(log_path, readonly=True) as audit:
        audit.copy_to(tmp_path / "copy.db")
    with EventLog.open(tmp_path / "copy.db", readonly=True) as copy:
        assert copy.verify() == VerifyReport(True, None, None, 1)


@pytest.mark.parametrize("content", [b"precious", b""])
def test_copy_to_refuses_an_existing_file_and_leaves_it_alone(
        log: EventLog, tmp_path: Path, content: bytes) -> None:
    log.append(EventKind.SESSION_STARTED, session="s")
    dest = tmp_path / "existing.db"
    dest.write_bytes(content)
    with pytest.raises(UsageError, match="already there") as caught:
        log.copy_to(dest)
    _one_line(caught.value)
    assert dest.read_bytes() == content


# -- readers and writers ---------------------------------------------------------------------


def test_a_reader_holding_a_transaction_does_not_block_appends(log_path: Path) -> None:
    with EventLog.open(log_path) as writer:
        writer.append(EventKind.SESSION_STARTED, session="s")
        reader = sqlite3.connect(f"file:{log_path}?mode=ro", uri=True, isolation_level=None)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1
            started = time.monotonic()
            for i in range(20):
                writer.append(EventKind.CACHE_CHANGED, session="s", data={"i": i})
            # A blocked writer would wait out busy_timeout and then fail.
            assert time.monotonic() - started < BUSY_TIMEOUT_MS / 1000 / 2
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1  # its snapshot
            reader.execute("COMMIT")
            assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 21
        finally:
            reader.close()


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from installengine.eventlog import EventLog
    with EventLog.open(sys.argv[1], durable=True) as log:
        print("ready", flush=True)
        while sys.stdin.readline().strip() == "more":
            for i in range(25):
                log.append("cache-changed", session="writer", data={"i": i, "pad": "x" * 100})
            print(log.head[0], flush=True)
""")


@pytest.fixture
def writer_process(tmp_path: Path, log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the log open for writing, appending 25 events per request."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(log_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline() == "ready\n"
    yield proc
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_read_only_log_follows_another_process_writing(
        writer_process: subprocess.Popen[str], log_path: Path) -> None:
    assert writer_process.stdin is not None
    assert writer_process.stdout is not None
    with EventLog.open(log_path, readonly=True) as audit:
        assert list(audit.query()) == []
        pending = None
        for _ in range(8):
            writer_process.stdin.write("more\n")
            writer_process.stdin.flush()
            # Read while the other process writes its next 25 events.
            seqs = [e.seq for e in audit.query()]
            assert seqs == list(range(1, len(seqs) + 1))
            report = audit.verify()
            assert report.ok, report
            pending = int(writer_process.stdout.readline())
            assert len(list(audit.query(session="writer"))) == pending
        assert pending == 200
        assert audit.verify() == VerifyReport(True, None, None, 200)


# -- threads ---------------------------------------------------------------------------------


def test_concurrent_appends_from_threads_keep_seq_gap_free_and_the_chain_valid(log_path: Path) -> None:
    threads_n, rounds = 8, 30
    log = EventLog.open(log_path, durable=True)
    start = threading.Barrier(threads_n + 1)
    done = threading.Event()
    results: dict[int, list[list[Event]]] = {}
    errors: list[BaseException] = []
    reads: list[list[int]] = []

    def write(t: int) -> None:
        try:
            start.wait()
            groups = []
            for i in range(rounds):
                if i % 5 == 4:
                    groups.append(log.append_many([{"kind": EventKind.CACHE_CHANGED, "session": f"t{t}",
                                                    "data": {"t": t, "i": i, "part": p}}
                                                   for p in range(3)]))
                else:
                    groups.append([log.append(EventKind.CACHE_CHANGED, session=f"t{t}",
                                              data={"t": t, "i": i})])
            results[t] = groups
        except BaseException as err:
            errors.append(err)

    def read() -> None:
        try:
            start.wait()
            while not done.is_set():
                reads.append([e.seq for e in log.query()])
        except BaseException as err:
            errors.append(err)

    writers = [threading.Thread(target=write, args=(t,)) for t in range(threads_n)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    try:
        assert errors == []
        total = threads_n * (rounds + 2 * (rounds // 5))
        stored = list(log.query())
        assert [e.seq for e in stored] == list(range(1, total + 1))
        returned = sorted((e for groups in results.values() for g in groups for e in g),
                          key=lambda e: e.seq)
        assert [as_stored(e) for e in returned] == [as_stored(e) for e in stored]
        for groups in results.values():
            seqs = [e.seq for g in groups for e in g]
            assert seqs == sorted(seqs)
            for group in groups:  # one append_many is one run of consecutive seqs
                assert [e.seq for e in group] == list(range(group[0].seq, group[0].seq + len(group)))
        assert all(r == list(range(1, len(r) + 1)) for r in reads)  # every read saw a prefix
        assert log.verify() == VerifyReport(True, None, None, total)
        assert log.head == (total, stored[-1].hash)
    finally:
        log.close()


def test_checked_json_is_stored_as_given_and_verifies(log: EventLog) -> None:
    value = {"patch": [{"op": "add", "path": "/é", "value": [1, 2.5, None]}], "by": "x", "base": 3}
    ev = log.append("cache-changed", session="s", data=CheckedJSON(value, canonical_json(value)))
    assert ev.data == value
    again = log.get(ev.seq)
    assert again is not None
    assert again.data == value
    assert again.hash == ev.hash
    assert log.verify().ok


def test_an_unsynced_append_survives_the_process_being_killed(log_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from installengine.eventlog import EventLog
        log = EventLog.open({str(log_path)!r}, durable=True)
        log.append_many([{{"kind": "checkpoint-registered", "session": "s", "data": {{"n": 1}}}}],
                        sync=False)
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == -9, done.stderr
    with EventLog.open(log_path, readonly=True) as log:
        events = list(log.query(kind="checkpoint-registered"))
        assert [e.data for e in events] == [{"n": 1}]
        assert log.verify().ok
