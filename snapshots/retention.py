"""Retention: which snapshot files and filesystem snapshots ``prune`` removes, and removing them.

Planning is a pure function of the lineage, the snapshot files and the
target's filesystem snapshots, so it can be shown as a dry run and tested
without I/O; applying the plan is a separate step. Events are never deleted:
the log stays the truth, and a snapshot file is only a cache of it.

The policy keeps the last ``keep_last`` snapshot points of the current lineage
(the chain from the first point to where the install stands now; a point
re-taken after a rollback to it counts once). Snapshot
files and filesystem snapshots of every point older than the oldest kept one
are removed, on any branch. Points at or after it, kept or abandoned, keep
theirs. Removing a file never makes a point unresumable, because the log
rebuilds it; removing a point's filesystem snapshot does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from installengine.eventlog import UsageError

from .lineage import Lineage
from .points import SnapshotPoint
from .store import SnapshotFile, SnapshotStore
from .targets.base import FsSnapshot, Target


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What a prune keeps and removes; ``cutoff`` is the seq of the oldest kept point."""

    keep_last: int
    kept: tuple[SnapshotPoint, ...]
    cutoff: int | None
    files: tuple[SnapshotFile, ...]
    fs_snapshots: tuple[FsSnapshot, ...]

    @property
    def empty(self) -> bool:
        return not self.files and not self.fs_snapshots

    def as_json(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "kept_points": [p.seq for p in self.kept],
                "cutoff": self.cutoff, "files": [f.path.name for f in self.files],
                "fs_snapshots": [s.name for s in self.fs_snapshots],
                # (name, id) pairs: the rules exempt exactly these from "must still exist"
                "fs_snapshot_ids": [[s.name, s.id] for s in self.fs_snapshots]}


def plan_prune(lineage: Lineage, files: Sequence[SnapshotFile],
               fs_snapshots: Sequence[FsSnapshot], *, keep_last: int) -> PrunePlan:
    """Decide what to remove so that only the last ``keep_last`` points keep their snapshots.

    With ``keep_last=0``, or when no point is current (after a cleanup), every
    snapshot file and every filesystem snapshot recorded by a point is removed.
    A filesystem snapshot no point recorded is not ours to judge and is kept.

    :raises UsageError: when ``keep_last`` is negative.
    """
    if keep_last < 0:
        raise UsageError(f"keep_last must be 0 or more, got {keep_last}")
    # A point re-taken after a rollback (the same checkpoint and when) counts once: its
    # latest occurrence is the state the install stands on.
    latest: list[SnapshotPoint] = []
    seen: set[tuple[str, str]] = set()
    for point in reversed(lineage.chain()):
        if len(latest) == keep_last:
            break
        if (point.checkpoint, point.when.value) not in seen:
            seen.add((point.checkpoint, point.when.value))
            latest.append(point)
    kept = tuple(reversed(latest))
    cutoff = kept[0].seq if kept else None

    def older(seq: int) -> bool:
        return cutoff is None or seq < cutoff

    doomed_files = tuple(f for f in files if older(f.seq))
    recorded = {(p.fs_snapshot, p.fs_id or ""): p for p in lineage.points.values()
                if p.fs_snapshot is not None}
    doomed_fs = tuple(s for s in fs_snapshots
                      if (s.name, s.id) in recorded and older(recorded[(s.name, s.id)].seq))
    return PrunePlan(keep_last, kept, cutoff, doomed_files, doomed_fs)


@dataclass(frozen=True, slots=True)
class PruneOutcome:
    """What applying a plan removed (a file already gone is not listed)."""

    removed_files: list[str]
    destroyed_fs_snapshots: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"removed_files": self.removed_files,
                "destroyed_fs_snapshots": self.destroyed_fs_snapshots}


def apply_prune(plan: PrunePlan, *, store: SnapshotStore, target: Target | None) -> PruneOutcome:
    """Remove what ``plan`` lists: snapshot files first, then filesystem snapshots.

    Files go first because they are only caches: if destroying a filesystem
    snapshot fails, nothing that the log cannot rebuild has been lost.

    :raises TargetError: when the target's tool cannot destroy a snapshot.
    """
    removed = [f.path.name for f in plan.files if store.remove(f.seq, f.digest)]
    destroyed: list[str] = []
    if target is not None and target.takes_fs_snapshots:
        for snap in plan.fs_snapshots:
            target.destroy_snapshot(snap.name)
            destroyed.append(snap.name)
    return PruneOutcome(removed, destroyed)
