"""Which snapshot points make up the current state: folded from events, pure.

Points form a tree through ``parent``. The *head* is where the install stands
now: the latest point taken, or the point the latest rollback returned to; a
cleanup forgets it. The current lineage is the chain from the root to the head;
completions outside it were abandoned by a rollback and no longer count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from installengine.eventlog import Event, EventKind

from .points import SnapshotPoint, When

LINEAGE_KINDS = (EventKind.SNAPSHOT_TAKEN, EventKind.ROLLED_BACK, EventKind.CLEANUP,
                 EventKind.CHECKPOINT_FAILED, EventKind.SESSION_STARTED, EventKind.PRUNED)


@dataclass(slots=True)
class Lineage:
    points: dict[int, SnapshotPoint] = field(default_factory=dict)
    head: int | None = None
    #: before-point seq -> name of the checkpoint whose run from it failed
    failed_runs: dict[int, str] = field(default_factory=dict)
    #: session ids that have started on this log, oldest first
    sessions: list[str] = field(default_factory=list)
    #: (name, id) of filesystem snapshots that prune removed on purpose
    pruned_fs: set[tuple[str, str]] = field(default_factory=set)

    def add(self, ev: Event) -> None:
        """Take one more event into account (events must come in seq order)."""
        if ev.kind == EventKind.SNAPSHOT_TAKEN:
            self.points[ev.seq] = SnapshotPoint.from_event(ev)
            self.head = ev.seq
        elif ev.kind == EventKind.ROLLED_BACK:
            self.head = ev.data.get("to")
        elif ev.kind == EventKind.CLEANUP:
            self.head = None
        elif ev.kind == EventKind.CHECKPOINT_FAILED:
            before = ev.data.get("before") if isinstance(ev.data, dict) else None
            if isinstance(before, int) and ev.checkpoint:
                self.failed_runs[before] = ev.checkpoint
        elif ev.kind == EventKind.SESSION_STARTED and ev.session not in self.sessions:
            self.sessions.append(ev.session)
        elif ev.kind == EventKind.PRUNED and isinstance(ev.data, dict):
            for pair in ev.data.get("fs_snapshot_ids", []):
                if isinstance(pair, list) and len(pair) == 2:
                    self.pruned_fs.add((str(pair[0]), str(pair[1])))

    def chain(self, seq: int | None = None) -> list[SnapshotPoint]:
        """Points from the root to ``seq`` (default: the head), oldest first."""
        at = self.head if seq is None else seq
        chain: list[SnapshotPoint] = []
        seen: set[int] = set()
        while at is not None and at in self.points and at not in seen:
            seen.add(at)
            point = self.points[at]
            chain.append(point)
            at = point.parent
        chain.reverse()
        return chain

    def completed(self, seq: int | None = None) -> list[SnapshotPoint]:
        """The completed points of the chain, in order."""
        return [p for p in self.chain(seq) if p.when is When.COMPLETED]


def fold(events: Iterable[Event]) -> Lineage:
    """Build the lineage from events in seq order (kinds outside LINEAGE_KINDS are ignored)."""
    lineage = Lineage()
    for ev in events:
        lineage.add(ev)
    return lineage
