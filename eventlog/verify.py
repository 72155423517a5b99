"""Hash-chain verification as a pure function over stored rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UsageError
from .events import VerifyReport
from .hashing import GENESIS_HASH, event_hash


@dataclass(frozen=True, slots=True)
class StoredRow:
    """An events row exactly as stored: ``data_json`` is the column's text."""

    seq: int
    session: str
    ts: str
    kind: str
    checkpoint: str | None
    data_json: str
    prev_hash: str
    hash: str


def check_chain(rows: Iterable[StoredRow], *, start_seq: int = 1,
                start_hash: str = GENESIS_HASH) -> VerifyReport:
    """Check that ``rows`` are gap-free from ``start_seq`` and each hash is right.

    The first row that breaks the chain is reported, so an auditor knows where
    trust ends: everything before it is intact. A row numbered before ``start_seq``
    is reported too, but only when nothing later breaks the chain.
    """
    expected_seq, prev = start_seq, start_hash
    count = 0
    stray: int | None = None
    for row in rows:
        if row.seq < expected_seq:
            # Rows come in seq order, so this one is numbered before the chain starts (or
            # repeats a seq). Keep checking: a row renumbered out of the way also leaves a
            # gap further on, and that gap is where trust ends.
            if stray is None:
                stray = row.seq
            continue
        if row.seq != expected_seq:
            return VerifyReport(False, expected_seq,
                                f"event {expected_seq} is missing (found {row.seq} next)", count)
        if row.prev_hash != prev:
            return VerifyReport(False, row.seq,
                                f"event {row.seq} does not link to event {row.seq - 1}", count)
        try:
            computed = event_hash(seq=row.seq, session=row.session, ts=row.ts, kind=row.kind,
                                  checkpoint=row.checkpoint, data_json=row.data_json,
                                  prev_hash=row.prev_hash)
        except UsageError as err:  # a damaged column that cannot even be hashed
            return VerifyReport(False, row.seq, f"event {row.seq} cannot be hashed: {err}", count)
        if computed != row.hash:
            return VerifyReport(False, row.seq,
                                f"event {row.seq} has been altered (hash mismatch)", count)
        prev = row.hash
        expected_seq += 1
        count += 1
    if stray is not None:
        return VerifyReport(False, stray, f"event {stray} is out of sequence: the chain starts "
                            f"at event {start_seq} and has no room for it", count)
    return VerifyReport(True, None, None, count)


def check_head(report: VerifyReport, *, recorded_seq: str, recorded_hash: str | None,
               last: tuple[int, str] | None) -> VerifyReport:
    """Compare the end of a checked chain with the head recorded in ``meta``.

    ``report`` is what :func:`check_chain` said about the rows; ``last`` is the
    (seq, hash) of the last row, or None for an empty table. Removing events from
    the end leaves an intact chain, so only the recorded head reveals it. A break
    inside the chain is returned as it is; a row numbered before the chain is
    reported only if the end is intact, because a row renumbered out of the way
    also shortens the chain.
    """
    if not report.ok and (report.first_bad_seq is None or report.first_bad_seq >= 1):
        return report
    if not (recorded_seq.isascii() and recorded_seq.isdigit()):
        return VerifyReport(False, None, f"the recorded head seq {recorded_seq!r} is not a number: "
                            "the meta table was altered", report.events)
    head_seq = int(recorded_seq)
    actual, actual_hash = last if last else (0, GENESIS_HASH)
    if head_seq != actual:
        return VerifyReport(False, min(head_seq, actual) + 1,
                            f"the log ends at event {actual} but recorded its head as event "
                            f"{head_seq}: events were removed or added", report.events)
    if recorded_hash != actual_hash:
        return VerifyReport(False, actual or None,
                            f"event {actual} does not match the recorded head hash: the last event "
                            "was replaced or the meta table altered", report.events)
    return report
