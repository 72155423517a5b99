"""Hash-chain verification as a pure function over stored rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    trust ends: everything before it is intact.
    """
    expected_seq, prev = start_seq, start_hash
    count = 0
    for row in rows:
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
        except Exception as err:  # a damaged column that cannot even be hashed
            return VerifyReport(False, row.seq, f"event {row.seq} cannot be hashed: {err}", count)
        if computed != row.hash:
            return VerifyReport(False, row.seq,
                                f"event {row.seq} has been altered (hash mismatch)", count)
        prev = row.hash
        expected_seq += 1
        count += 1
    return VerifyReport(True, None, None, count)
