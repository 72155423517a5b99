"""Taking snapshot points and rolling back to them: the engine's handle on this layer.

A point is appended as one transaction: the ``cache-changed`` diffs since the
previous point, then the ``snapshot-taken`` event that names them. The
filesystem snapshot is taken first, so a point that says it has one always
does; a snapshot file is written afterwards, and only now and then, because it
is a cache that costs the size of the whole state.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from installengine.eventlog import Event, EventKind, EventLog, LogWriteError

from .cache import DataCache, PendingChange, change_data
from .errors import SnapshotUnavailableError, TargetError
from .lineage import LINEAGE_KINDS, Lineage
from .materialize import check_files, decide_rebuilt, materialize
from .points import SnapshotPoint, When, fs_snapshot_name
from .rules import Decision, Registered, decide
from .store import SnapshotStore
from .targets.base import Target

logger = logging.getLogger(__name__)

#: write a snapshot file once the changes since the last one reach this, or the
#: size of the last file, whichever is larger: files cost O(change) amortised
MIN_FILE_INTERVAL = 256 * 1024
#: ... or once this many points with changes have passed since it, or the last file's
#: size over DIFF_COST_BYTES, whichever is larger: folding one diff costs about what
#: parsing that many bytes of a file does, so a resume never folds more than about
#: a file's worth of parsing (many small changes to a large cache, the other case)
MIN_DIFFS_BETWEEN_FILES = 256
DIFF_COST_BYTES = 16 * 1024

#: event data fields that hold seqs, remapped when events are copied into another log
SEQ_FIELDS = ("parent", "to", "before")


@dataclass(frozen=True, slots=True)
class PointRequest:
    """A snapshot point to record, and the event that rides with it (see take_point)."""

    checkpoint: str
    when: When
    fingerprint: str
    attempt: int
    then: tuple[EventKind, str, dict[str, Any]] | None = None


def read_lineage(log: EventLog) -> Lineage:
    """Fold the lineage from the log, reading only the kinds it needs (indexed)."""
    streams = [log.query(kind=kind) for kind in LINEAGE_KINDS]
    lineage = Lineage()
    for ev in heapq.merge(*streams, key=lambda e: e.seq):
        lineage.add(ev)
    return lineage


class Recorder:
    """Snapshot points of one engine session over one log."""

    def __init__(self, log: EventLog, store: SnapshotStore, cache: DataCache, *, session: str,
                 durable: bool, target: Target | None, first_bad_seq: int | None = None) -> None:
        self.log = log
        self.store = store
        self.cache = cache
        self.session = session
        self.durable = durable
        self.target = target
        self.first_bad_seq = first_bad_seq
        #: points rebuilt and checked in this session, and those that failed, with why
        self._rebuilt: set[int] = set()
        self._unrebuildable: dict[int, str] = {}
        self.lineage = read_lineage(log)
        #: the point the cache's pending changes apply to (None: the empty cache)
        self.base: int | None = None
        #: whether this session has taken a point or rolled back: only then do
        #: completions of the lineage count as done in this engine's view
        self.touched = False
        self._since_file = 0
        self._diffs_since_file = 0
        self._last_file_size = 0

    # -- appending ---------------------------------------------------------------------

    def append(self, kind: EventKind, *, checkpoint: str | None = None,
               data: Any = None, sync: bool = True) -> Event:
        event = self.log.append_many([{"kind": kind, "session": self.session,
                                       "checkpoint": checkpoint, "data": data}], sync=sync)[0]
        self.lineage.add(event)
        return event

    def take_point(self, checkpoint: str, when: When, *, fingerprint: str, attempt: int,
                   then: tuple[EventKind, str, dict[str, Any]] | None = None) -> SnapshotPoint:
        """Record the cache state now as point ``when`` of ``checkpoint``.

        ``then`` is one more event, ``(kind, field, data)``, appended in the same
        transaction with ``data[field]`` set to the point's seq: a checkpoint's
        ``checkpoint-started`` rides with its before-point, so each point costs one
        fsync, not two.

        :raises TargetError: when the filesystem snapshot fails; no point is recorded.
        :raises LogWriteError: when the log cannot be written; no point is recorded
            and the pending changes stay pending.
        """
        return self.take_points([PointRequest(checkpoint, when, fingerprint, attempt, then)])[0]

    def take_points(self, requests: list[PointRequest]) -> list[SnapshotPoint]:
        """Record several points of the same state in one transaction (one fsync).

        The runner records "X completed" and "before Y" together: nothing changes
        the cache between them, so they share the changes (on the first) and the
        filesystem snapshot (taken once, for the first).

        :raises TargetError: when the filesystem snapshot fails; no point is recorded.
        :raises LogWriteError: when the log cannot be written; no point is recorded
            and the pending changes stay pending.
        """
        fs_name = fs_id = None
        if self.durable and self.target is not None and self.target.takes_fs_snapshots:
            first = requests[0]
            snap = self.target.snapshot(fs_snapshot_name(first.checkpoint, first.when))
            fs_name, fs_id = snap.name, snap.id
        changes = self.cache.take_changes()
        try:
            events = self._append_points(changes, requests, fs_name, fs_id)
        except BaseException:
            self.cache.untake(changes)
            raise
        points = [SnapshotPoint.from_event(ev) for ev in events
                  if ev.kind == EventKind.SNAPSHOT_TAKEN]
        self.base = points[-1].seq
        self.touched = True
        self._since_file += sum(c.size for c in changes)
        self._diffs_since_file += bool(changes)
        if (self._since_file >= max(MIN_FILE_INTERVAL, self._last_file_size)
                or self._diffs_since_file >= max(MIN_DIFFS_BETWEEN_FILES,
                                                 self._last_file_size // DIFF_COST_BYTES)):
            if points[0].parent is None:
                # The log rebuilds this state from its own diffs alone; a file would be a
                # second copy of them. Recording the sums is what makes that rebuild cheap.
                self._record_sums(points[-1])
            else:
                self._write_file(points[-1])
        return points

    def _append_points(self, changes: list[PendingChange], requests: list[PointRequest],
                       fs_name: str | None, fs_id: str | None) -> list[Event]:
        with self.log.lock:
            seq = self.log.head[0] + 1
            records: list[dict[str, Any]] = []
            diffs: list[int] = []
            for actor, group in groupby(changes, key=lambda c: c.actor):
                records.append({"kind": EventKind.CACHE_CHANGED, "session": self.session,
                                "checkpoint": actor,
                                "data": change_data(list(group), actor, self.base)})
                diffs.append(seq)
                seq += 1
            digest = self.cache.digest()
            parent = self.base
            for req in requests:
                records.append({
                    "kind": EventKind.SNAPSHOT_TAKEN, "session": self.session,
                    "checkpoint": req.checkpoint,
                    "data": {"point": req.when.value, "digest": digest,
                             "durable": self.durable, "fingerprint": req.fingerprint,
                             "parent": parent, "diffs": diffs, "fs_snapshot": fs_name,
                             "fs_id": fs_id, "attempt": req.attempt}})
                parent, diffs = seq, []
                seq += 1
                if req.then is not None:
                    kind, link, data = req.then
                    records.append({"kind": kind, "session": self.session,
                                    "checkpoint": req.checkpoint, "data": {**data, link: parent}})
                    seq += 1
            events = self.log.append_many(records)
        for ev in events:
            self.lineage.add(ev)
        return events

    def _write_file(self, point: SnapshotPoint) -> None:
        """Write the state as a snapshot file, then record in the log what it holds.

        The ``snapshot-stored`` event carries the file's SHA-256 and the digest
        tree's sums, so that loading the file costs a hash of its bytes instead of
        a hash of every entry. Without the event (a crash in between) the file is
        still used, checked the slow way.
        """
        try:
            data = self.cache.dumps()
            self.store.write(point.seq, point.digest, data)
        except TargetError as err:
            # A snapshot file is only a cache of the log: the point stands without it.
            logger.warning("snapshot file not written: %s", err)
            return
        self._last_file_size = len(data)
        self._since_file = self._diffs_since_file = 0
        self._record_stored(point, {"sha256": hashlib.sha256(data).hexdigest(),
                                    "bytes": len(data)})

    def _record_sums(self, point: SnapshotPoint) -> None:
        """Record the digest tree's sums for a point the log rebuilds from nothing (no file)."""
        if self._record_stored(point, {"in_log": True}):
            self._last_file_size = self._since_file
            self._since_file = self._diffs_since_file = 0

    def _record_stored(self, point: SnapshotPoint, what: dict[str, Any]) -> bool:
        """Append the ``snapshot-stored`` event for ``point``; False when the log refused it."""
        try:
            self.append(EventKind.SNAPSHOT_STORED, checkpoint=point.checkpoint,
                        data={"point": point.seq, "digest": point.digest, **what,
                              "sums": self.cache.digest_sums()})
        except LogWriteError as err:
            # Only loading gets slower: the file, or the log, still rebuilds the point.
            logger.warning("snapshot point %s: what was stored is not recorded in the log: %s",
                           point.seq, err)
            return False
        return True

    # -- deciding and rolling back -----------------------------------------------------------

    def fs_snapshots(self) -> list[Any] | None:
        if self.target is None or not self.target.takes_fs_snapshots or not self.durable:
            return None
        return self.target.list_snapshots()

    def decide(self, registered: list[Registered], *, rebuild: bool = False) -> list[Decision]:
        """The rules' decisions; with ``rebuild``, resumable points are rebuilt and checked first.

        Rebuilding proves what the rules cannot see without I/O: that each offered
        point's state still comes out of the log with its digest. Each point is
        rebuilt once per session.
        """
        if not rebuild:
            return decide(self.lineage, registered, session=self.session,
                          fs_snapshots=self.fs_snapshots(), first_bad_seq=self.first_bad_seq,
                          unrebuildable=self._unrebuildable)
        return decide_rebuilt(self.log, self.lineage, registered, store=self.store,
                              session=self.session, fs_snapshots=self.fs_snapshots(),
                              first_bad_seq=self.first_bad_seq, rebuilt=self._rebuilt,
                              found=self._unrebuildable)

    def view_completed(self) -> list[SnapshotPoint]:
        """Completed points that count as done in this engine's view."""
        return self.lineage.completed() if self.touched else []

    def materialize(self, point: SnapshotPoint) -> dict[str, Any]:
        """A copy of the state at ``point`` (for audits and tests).

        :raises SnapshotUnavailableError: when it cannot be rebuilt.
        """
        state, _ = materialize(self.log, self.lineage, point.seq, self.store)
        return state

    def rollback_to(self, point: SnapshotPoint, *, checkpoint: str, attempt: int) -> Event:
        """Restore the filesystem and the cache to ``point``, as one step.

        The state is rebuilt and verified first, so a point that cannot be
        rebuilt changes nothing; then the filesystem, then the log, then the cache
        (in memory, so it cannot fail half-way).

        :raises SnapshotUnavailableError: when the state cannot be rebuilt.
        :raises TargetError: when the filesystem rollback fails; the cache and the
            log are unchanged.
        :raises LogWriteError: when the log cannot record a rollback the filesystem
            has made; the cache and the log are unchanged, and the message says
            what the filesystem lost and how to finish.
        """
        try:
            state, tree = materialize(self.log, self.lineage, point.seq, self.store)
        except SnapshotUnavailableError as err:
            self._unrebuildable[point.seq] = str(err)  # so that explain() says so from now on
            raise
        destroyed: list[str] = []
        if point.fs_snapshot is not None and self.fs_snapshots() is not None:
            assert self.target is not None
            destroyed = self.target.rollback(point.fs_snapshot)
        abandoned = [p.checkpoint for p in self.lineage.completed()
                     if p.seq > point.seq]
        try:
            event = self.append(EventKind.ROLLED_BACK, checkpoint=checkpoint,
                                data={"to": point.seq, "point": point.label,
                                      "digest": point.digest, "attempt": attempt,
                                      "abandoned": abandoned,
                                      "destroyed_fs_snapshots": destroyed})
        except LogWriteError as err:
            if point.fs_snapshot is None or self.target is None:
                raise
            lost = f", destroying {', '.join(destroyed)}" if destroyed else ""
            raise LogWriteError(
                f"the filesystem of {self.target.spec} was rolled back to {point.fs_snapshot}"
                f"{lost}, but the log could not record it ({err}); the cache and the log are "
                f"unchanged: fix the log's disk, then resume from {checkpoint!r} again to "
                "finish the rollback") from err
        self.cache.restore(state, tree)
        self.base = point.seq
        self.touched = True
        cheap = self.store.has(point.seq, point.digest) or point.parent is None
        if cheap:
            self._since_file = self._diffs_since_file = 0
        return event

    def rebase(self) -> None:
        """Forget the base point: the next point records the whole cache (after cleanup)."""
        self.cache.record_whole()
        self.base = None
        self.touched = False

    def verify_files(self) -> Iterator[tuple[str, bool, bool]]:
        """(file, ok, rebuildable) for every snapshot file of this log."""
        for check in check_files(self.log, self.lineage, self.store):
            yield check.file, check.ok, bool(check.rebuildable)
