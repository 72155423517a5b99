"""Snapshot points as recorded in the log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from installengine.eventlog import Event


class When(StrEnum):
    """Where a snapshot point sits relative to its checkpoint."""

    BEFORE = "before"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class SnapshotPoint:
    """A log position at which the persistent cache state is fixed.

    ``parent`` is the point this state was derived from (None: the empty cache);
    ``diffs`` are the seqs of the ``cache-changed`` events that turn the
    parent's state into this one.
    """

    seq: int
    checkpoint: str
    when: When
    digest: str
    durable: bool
    session: str
    fingerprint: str
    parent: int | None = None
    diffs: tuple[int, ...] = ()
    fs_snapshot: str | None = None
    fs_id: str | None = None
    attempt: int = 0

    @classmethod
    def from_event(cls, event: Event) -> SnapshotPoint:
        d: dict[str, Any] = event.data
        return cls(seq=event.seq, checkpoint=str(event.checkpoint), when=When(d["point"]),
                   digest=d["digest"], durable=bool(d["durable"]), session=event.session,
                   fingerprint=d["fingerprint"], parent=d.get("parent"),
                   diffs=tuple(d.get("diffs", ())), fs_snapshot=d.get("fs_snapshot"),
                   fs_id=d.get("fs_id"), attempt=int(d.get("attempt", 0)))

    @property
    def label(self) -> str:
        """How people name this point: ``before configure`` / ``configure completed``."""
        return (f"before {self.checkpoint}" if self.when is When.BEFORE
                else f"{self.checkpoint} completed")


def fs_snapshot_name(checkpoint: str, when: When) -> str:
    """The filesystem snapshot name for a point: ``.step_<checkpoint>.<before|done>``."""
    return f".step_{checkpoint}.{'before' if when is When.BEFORE else 'done'}"


def fs_snapshot_owner(name: str) -> str | None:
    """The checkpoint a ``.step_<checkpoint>.<before|done>`` name belongs to, else None."""
    stem, dot, when = name.removeprefix(".step_").rpartition(".")
    if not name.startswith(".step_") or not dot or when not in ("before", "done"):
        return None
    return stem
