"""Tamper evidence: the pure chain check, and verify() on real, altered SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from installengine.eventlog import EventKind, EventLog, LogIntegrityError, VerifyReport
from installengine.eventlog.hashing import GENESIS_HASH, event_hash
from installengine.eventlog.verify import StoredRow, check_chain, check_head

COLUMNS = ("seq", "session", "ts", "kind", "checkpoint", "data", "prev_hash", "hash")
TEXT_COLUMNS = COLUMNS[1:]

# -- the pure check ------------------------------------------------------------------------


def make_chain(n: int, *, start_seq: int = 1, start_hash: str = GENESIS_HASH) -> list[StoredRow]:
    rows, prev = [], start_hash
    for seq in range(start_seq, start_seq + n):
        fields = {"seq": seq, "session": f"s{seq % 3}", "ts": f"2026-01-01T00:00:{seq % 60:02d}+00:00",
                  "kind": "cache-changed", "checkpoint": None if seq % 2 else f"c{seq}",
                  "data_json": f'{{"n":{seq}}}', "prev_hash": prev}
        h = event_hash(**fields)  # type: ignore[arg-type]
        rows.append(StoredRow(hash=h, **fields))  # type: ignore[arg-type]
        prev = h
    return rows


def test_an_intact_chain_checks_out_and_counts_its_events() -> None:
    assert check_chain(make_chain(5)) == VerifyReport(True, None, None, 5)


def test_an_empty_chain_checks_out() -> None:
    assert check_chain([]) == VerifyReport(True, None, None, 0)


def test_a_chain_continues_from_a_given_seq_and_hash() -> None:
    rows = make_chain(8)
    assert check_chain(rows[3:], start_seq=4, start_hash=rows[2].hash).ok
    assert check_chain(rows[3:], start_seq=4).first_bad_seq == 4  # wrong start hash


def test_a_gap_reports_the_missing_seq() -> None:
    rows = make_chain(6)
    report = check_chain(rows[:2] + rows[3:])
    assert (report.ok, report.first_bad_seq, report.events) == (False, 3, 2)
    assert report.reason == "event 3 is missing (found 4 next)"


def test_a_row_before_the_start_does_not_hide_a_later_break() -> None:
    rows = make_chain(5)
    moved = StoredRow(**{**_fields(rows[2]), "seq": -7})
    report = check_chain([moved, *rows[:2], *rows[3:]])
    assert report.first_bad_seq == 3


def test_a_row_added_before_the_start_is_reported() -> None:
    rows = make_chain(3)
    extra = StoredRow(**{**_fields(rows[0]), "seq": 0})
    report = check_chain([extra, *rows])
    assert (report.ok, report.first_bad_seq) == (False, 0)


def _fields(row: StoredRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in StoredRow.__slots__}


@given(n=st.integers(1, 12), data=st.data())
def test_changing_any_field_of_any_row_is_reported_at_that_row(n: int, data: st.DataObject) -> None:
    rows = make_chain(n)
    index = data.draw(st.integers(0, n - 1), label="index")
    field = data.draw(st.sampled_from(["session", "ts", "kind", "checkpoint", "data_json",
                                       "prev_hash", "hash"]), label="field")
    old = getattr(rows[index], field)
    new = data.draw(st.text(max_size=70).filter(lambda v: v != old), label="new")
    rows[index] = StoredRow(**{**_fields(rows[index]), field: new})
    report = check_chain(rows)
    assert (report.ok, report.first_bad_seq, report.events) == (False, index + 1, index)


def test_check_head_compares_the_end_of_the_chain_with_the_recorded_head() -> None:
    rows = make_chain(4)
    intact = check_chain(rows)
    end = (4, rows[-1].hash)
    assert check_head(intact, recorded_seq="4", recorded_hash=rows[-1].hash, last=end) == intact
    shorter = check_chain(rows[:2])
    removed = check_head(shorter, recorded_seq="4", recorded_hash=rows[-1].hash, last=(2, rows[1].hash))
    assert (removed.ok, removed.first_bad_seq, removed.events) == (False, 3, 2)
    replaced = check_head(intact, recorded_seq="4", recorded_hash="e" * 64, last=end)
    assert (replaced.ok, replaced.first_bad_seq) == (False, 4)
    garbled = check_head(intact, recorded_seq="4x", recorded_hash=rows[-1].hash, last=end)
    assert (garbled.ok, garbled.first_bad_seq) == (False, None)
    empty = check_head(check_chain([]), recorded_seq="0", recorded_hash=GENESIS_HASH, last=None)
    assert empty.ok


def test_check_head_keeps_a_break_inside_the_chain() -> None:
    rows = make_chain(4)
    broken = check_chain(rows[:1] + rows[2:])
    assert check_head(broken, recorded_seq="9", recorded_hash="x", last=(4, rows[-1].hash)) == broken


# -- verify() on a real log, altered through a separate connection -------------------------

EVENTS = st.lists(
    st.fixed_dictionaries({
        "kind": st.sampled_from(list(EventKind)),
        "session": st.sampled_from(["3f2a00c0ffee", "b0b0b0b0b0b0"]),
        "checkpoint": st.none() | st.sampled_from(["partition", "format", ""]),
        "data": st.none() | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1)
                                            | st.text(max_size=5),
                                            max_size=3),
    }),
    min_size=1, max_size=8,
)


def _build(path: Path, records: list[dict[str, Any]], split: int) -> EventLog:
    log = EventLog.open(path, durable=False)
    log.append_many(records[:split])
    for record in records[split:]:
        log.append(**record)
    return log


def _tamper_byte(conn: sqlite3.Connection, data: st.DataObject, n: int) -> int:
    """Change one byte of one stored column of one event; return the seq that must be reported."""
    seq = data.draw(st.integers(1, n), label="seq")
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    if column == "seq":
        # An integer has no byte to flip in SQL; renumber the row to a free seq instead.
        new_seq = data.draw(st.integers(n + 1, n + 10**6) | st.integers(-(10**6), 0), label="new_seq")
        conn.execute("UPDATE events SET seq = ? WHERE seq = ?", (new_seq, seq))
        return seq
    (raw,) = conn.execute(f"SELECT CAST({column} AS BLOB) FROM events WHERE seq = ?", (seq,)).fetchone()
    new: bytes | None
    if raw is None:
        new = data.draw(st.binary(max_size=3), label="checkpoint for NULL")
    elif raw == b"":
        new = None if column == "checkpoint" else data.draw(st.binary(min_size=1, max_size=1))
    else:
        pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
        new = raw[:pos] + bytes([byte]) + raw[pos + 1:]
    # CAST keeps the column TEXT even when the new bytes are not valid UTF-8.
    conn.execute(f"UPDATE events SET {column} = CAST(? AS TEXT) WHERE seq = ?", (new, seq))
    return seq


def _delete(conn: sqlite3.Connection, data: st.DataObject, n: int) -> int:
    seq = data.draw(st.integers(1, n) | st.just(n), label="deleted")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    return seq


def _swap(conn: sqlite3.Connection, data: st.DataObject, n: int) -> int:
    first = data.draw(st.integers(1, n - 1), label="first")
    second = data.draw(st.integers(first + 1, n), label="second")
    cols = ", ".join(TEXT_COLUMNS)
    a = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (first,)).fetchone()
    b = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (second,)).fetchone()
    assignments = ", ".join(f"{c} = ?" for c in TEXT_COLUMNS)
    conn.execute(f"UPDATE events SET {assignments} WHERE seq = ?", (*b, first))
    conn.execute(f"UPDATE events SET {assignments} WHERE seq = ?", (*a, second))
    return first


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=EVENTS, data=st.data())
def test_any_single_alteration_is_reported_at_the_first_bad_seq(
        new_log_path: Callable[[], Path], records: list[dict[str, Any]], data: st.DataObject) -> None:
    path = new_log_path()
    n = len(records)
    log = _build(path, records, data.draw(st.integers(0, n), label="split"))
    try:
        assert log.verify() == VerifyReport(True, None, None, n)
        operations = [_tamper_byte, _delete] + ([_swap] if n > 1 else [])
        operation = data.draw(st.sampled_from(operations), label="operation")
        conn = sqlite3.connect(path)
        try:
            with conn:
                expected = operation(conn, data, n)
        finally:
            conn.close()
        report = log.verify()
        assert (report.ok, report.first_bad_seq) == (False, expected), report
        assert report.reason
        assert "\n" not in report.reason
    finally:
        log.close()
    with EventLog.open(path, readonly=True) as audit:
        assert audit.verify().first_bad_seq == expected


def test_an_intact_log_verifies(log: EventLog) -> None:
    assert log.verify() == VerifyReport(True, None, None, 0)
    log.append_many([{"kind": EventKind.PAUSED, "session": "s"}] * 3)
    assert log.verify() == VerifyReport(True, None, None, 3)


def _filled(path: Path, n: int = 3) -> None:
    with EventLog.open(path, durable=False) as log:
        for i in range(n):
            log.append(EventKind.CACHE_CHANGED, session="s", data={"i": i})


def _set_meta(path: Path, key: str, value: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.close()


def test_a_replaced_last_event_is_caught_by_the_recorded_head(log_path: Path) -> None:
    _filled(log_path)
    _set_meta(log_path, "head_hash", "f" * 64)
    with EventLog.open(log_path, readonly=True) as log:
        report = log.verify()
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert report.reason
    assert "head" in report.reason


@pytest.mark.parametrize(("head_seq", "first_bad"), [("5", 4), ("2", 3), ("0", 1)])
def test_a_head_that_disagrees_with_the_last_event_is_reported(
        log_path: Path, head_seq: str, first_bad: int) -> None:
    _filled(log_path)
    _set_meta(log_path, "head_seq", head_seq)
    with EventLog.open(log_path, readonly=True) as log:
        report = log.verify()
    assert (report.ok, report.first_bad_seq) == (False, first_bad)


@pytest.mark.parametrize("head_seq", ["three", "", "3.0"])
def test_a_garbled_head_is_a_failed_report_not_a_crash(log_path: Path, head_seq: str) -> None:
    _filled(log_path)
    _set_meta(log_path, "head_seq", head_seq)
    with EventLog.open(log_path, readonly=True) as log:
        report = log.verify()
    assert not report.ok
    assert report.reason
    assert "head" in report.reason


def test_a_row_slipped_in_before_the_first_event_is_reported(log_path: Path) -> None:
    _filled(log_path)
    conn = sqlite3.connect(log_path)
    with conn:  # a forged event that query() would show first
        conn.execute("INSERT INTO events SELECT 0, session, ts, kind, checkpoint, data, prev_hash, hash "
                     "FROM events WHERE seq = 1")
    conn.close()
    with EventLog.open(log_path, readonly=True) as log:
        assert next(log.query()).seq == 0
        report = log.verify()
    assert (report.ok, report.first_bad_seq) == (False, 0)


def test_a_flipped_byte_in_the_file_is_reported_at_its_event(log_path: Path) -> None:
    with EventLog.open(log_path, durable=False) as log:
        log.append_many([{"kind": "cache-changed", "session": "s", "data": {"n": i, "pad": "x" * 300}}
                         for i in range(1, 2001)])
        target = log.append(EventKind.CACHE_CHANGED, session="s", data={"marker": "MARKER-0001"})
        log.append_many([{"kind": "cache-changed", "session": "s", "data": {"pad": "y" * 300}}] * 2000)
    blob = bytearray(log_path.read_bytes())
    at = blob.index(b"MARKER-0001")
    blob[at] ^= 0x20
    log_path.write_bytes(bytes(blob))
    with EventLog.open(log_path, readonly=True) as audit:
        report = audit.verify()
    assert (report.ok, report.first_bad_seq) == (False, target.seq)


def test_a_damaged_page_is_a_failed_report_and_query_raises_our_error(log_path: Path) -> None:
    with EventLog.open(log_path, durable=False) as log:
        log.append_many([{"kind": "cache-changed", "session": "s", "data": {"n": i, "pad": "x" * 300}}
                         for i in range(1, 2001)])
        log.append(EventKind.CACHE_CHANGED, session="s", data={"marker": "MARKER-0002"})
        log.append_many([{"kind": "cache-changed", "session": "s", "data": {"pad": "y" * 300}}] * 2000)
        page_size = log._conn.execute("PRAGMA page_size").fetchone()[0]
    blob = bytearray(log_path.read_bytes())
    page = blob.index(b"MARKER-0002") // page_size * page_size
    blob[page:page + 12] = b"\xff" * 12  # the b-tree page header
    log_path.write_bytes(bytes(blob))
    with EventLog.open(log_path, readonly=True) as audit:
        report = audit.verify()
        assert not report.ok
        assert report.reason
        assert "\n" not in report.reason
        with pytest.raises(LogIntegrityError):
            list(audit.query())


def test_verify_while_another_connection_appends_never_reports_a_false_break(log_path: Path) -> None:
    writer = EventLog.open(log_path, durable=False)
    writer.append(EventKind.SESSION_STARTED, session="s")
    started = threading.Event()

    def append_a_while() -> None:
        started.set()
        for i in range(6000):
            writer.append(EventKind.CACHE_CHANGED, session="s", data={"i": i})

    thread = threading.Thread(target=append_a_while)
    reports: list[VerifyReport] = []
    try:
        with EventLog.open(log_path, readonly=True) as audit:
            thread.start()
            started.wait()
            while thread.is_alive():
                reports.append(audit.verify())
            reports.append(audit.verify())
    finally:
        thread.join()
        writer.close()
    assert [r for r in reports if not r.ok] == []
    assert len(reports) > 10
    assert reports[-1].events == 6001
