"""Which snapshot points make up the current state: folded from events, pure.

Points form a tree through ``parent``. The *head* is where the install stands
now: the latest point taken, or the point the latest rollback returned to; a
cleanup forgets it. The current lineage is the chain from the root to the head;
completions outside it were abandoned by a rollback and no longer count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from installengine.eventlog import Event, EventKind

from .points import SnapshotPoint, When

LINEAGE_KINDS = (EventKind.SNAPSHOT_TAKEN, EventKind.ROLLED_BACK, EventKind.CLEANUP,
                 EventKind.CHECKPOINT_FAILED, EventKind.SESSION_STARTED, EventKind.PRUNED,
                 EventKind.SNAPSHOT_STORED)


@dataclass(frozen=True, slots=True)
class Run:
    """One checkpoint's run in the current lineage: its before-point and its completion."""

    checkpoint: str
    before: SnapshotPoint | None
    completed: SnapshotPoint | None


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
    #: point seq -> what the log vouches for about its snapshot file (sha256, digest sums)
    stored: dict[int, dict[str, Any]] = field(default_factory=dict)

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
        elif ev.kind == EventKind.SNAPSHOT_STORED and isinstance(ev.data, dict):
            if isinstance(ev.data.get("point"), int):
                self.stored[ev.data["point"]] = ev.data
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

    def runs(self, seq: int | None = None) -> list[Run]:
        """The checkpoint runs that make up the state at ``seq`` (default: the head), in order.

        Checkpoints run in registration order, so a before-point of a checkpoint
        that already has a run in the chain (a plain ``execute()`` retrying a
        failed one, with those after it running again) starts it over: that run
        and every later one are superseded and no longer count. A run without a
        completion followed by other runs is a checkpoint that failed while the
        execution went on (``stop_on_error=False``).
        """
        runs: list[Run] = []
        for point in self.chain(seq):
            if point.when is When.BEFORE:
                names = [r.checkpoint for r in runs]
                if point.checkpoint in names:
                    del runs[names.index(point.checkpoint):]
                runs.append(Run(point.checkpoint, point, None))
            elif runs and runs[-1].checkpoint == point.checkpoint and runs[-1].completed is None:
                runs[-1] = Run(point.checkpoint, runs[-1].before, point)
            else:  # a completion without its before-point in the chain
                runs.append(Run(point.checkpoint, None, point))
        return runs

    def completed(self, seq: int | None = None) -> list[SnapshotPoint]:
        """The completed points of the current runs (see :meth:`runs`), in order."""
        return [r.completed for r in self.runs(seq) if r.completed is not None]


def fold(events: Iterable[Event]) -> Lineage:
    """Build the lineage from events in seq order (kinds outside LINEAGE_KINDS are ignored)."""
    lineage = Lineage()
    for ev in events:
        lineage.add(ev)
    return lineage
