"""The records the log hands out, and the names of event kinds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """Every kind the engine appends; a misspelt kind fails under mypy, not in the log."""

    SESSION_STARTED = "session-started"
    CHECKPOINT_REGISTERED = "checkpoint-registered"
    TARGET_ATTACHED = "target-attached"
    EXECUTION_STARTED = "execution-started"
    CHECKPOINT_STARTED = "checkpoint-started"
    CACHE_CHANGED = "cache-changed"
    CHECKPOINT_COMPLETED = "checkpoint-completed"
    CHECKPOINT_FAILED = "checkpoint-failed"
    CHECKPOINT_CANCELED = "checkpoint-canceled"
    SNAPSHOT_TAKEN = "snapshot-taken"
    SNAPSHOT_STORED = "snapshot-stored"
    PAUSED = "paused"
    CANCELED = "canceled"
    ROLLED_BACK = "rolled-back"
    EXECUTION_FINISHED = "execution-finished"
    TRANSITION = "transition"
    TRANSITION_REFUSED = "transition-refused"
    CLEANUP = "cleanup"
    PRUNED = "pruned"
    LOCK_TAKEN_OVER = "lock-taken-over"
    SESSION_ENDED = "session-ended"


KINDS = frozenset(kind.value for kind in EventKind)


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event; ``data`` is the parsed JSON value."""

    seq: int
    session: str
    ts: str
    kind: str
    checkpoint: str | None
    data: Any
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of checking a hash chain: ``first_bad_seq`` is None when ``ok``."""

    ok: bool
    first_bad_seq: int | None
    reason: str | None
    events: int = 0
