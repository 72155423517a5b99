"""The resumability rules: pure functions from what the log says to a verdict per checkpoint.

No I/O happens here. The caller passes the folded lineage, the registered
checkpoints, the target's current filesystem snapshots and the session, so
property tests can drive every rule directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .lineage import Lineage, Run
from .points import SnapshotPoint
from .targets.base import FsSnapshot


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered checkpoint as the rules see it."""

    name: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a checkpoint is resumable and, when it is not, why (one line)."""

    name: str
    resumable: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict and the snapshot point a resume from it would roll back to.

    ``point`` is None for a resumable first checkpoint without a before-point:
    that resume is a fresh attempt from the cache and target as they are.
    """

    verdict: Verdict
    point: SnapshotPoint | None = None
    #: True when X has not started in the current lineage since its predecessor completed
    not_started: bool = False


def decide(lineage: Lineage, registered: Sequence[Registered], *, session: str,
           fs_snapshots: Sequence[FsSnapshot] | None,
           first_bad_seq: int | None = None,
           unrebuildable: Mapping[int, str] | None = None) -> list[Decision]:
    """A decision for every registered checkpoint, in registration order.

    :param fs_snapshots: the target's snapshots oldest first, or None when the
        target does not roll its filesystem back.
    :param first_bad_seq: the first event that fails verification, if any;
        nothing at or after it can be trusted.
    :param unrebuildable: points (by seq) whose state does not rebuild to their
        digest, with the reason: the caller materializes, the rules stay pure.
    """
    chain = lineage.chain()
    runs = lineage.runs()
    #: the points of the current runs: superseded runs no longer count for the filesystem
    current = {p.seq for r in runs for p in (r.before, r.completed) if p is not None}
    decisions: list[Decision] = []
    blocked: str | None = None
    for index, reg in enumerate(registered):
        if blocked is not None:
            decisions.append(Decision(Verdict(reg.name, False, blocked)))
            continue
        if index > 0:
            reason = _prefix_mismatch(registered, index, runs, lineage)
            if reason is not None:
                decisions.append(Decision(Verdict(reg.name, False, reason)))
                blocked = reason if "failed" in reason else None
                continue
        # X's own before-point if X started (under this fingerprint) in its run's place,
        # else its predecessor's completed point (the prefix check made sure it exists).
        own = runs[index].before if index < len(runs) else None
        if own is not None and (own.checkpoint, own.fingerprint) != (reg.name, reg.fingerprint):
            own = None
        point = own if own is not None else runs[index - 1].completed if index > 0 else None
        not_started = own is None
        if point is None:
            decisions.append(Decision(Verdict(reg.name, True), None, not_started=True))
            continue
        reason = _unavailable(point, chain, session=session, fs_snapshots=fs_snapshots,
                              first_bad_seq=first_bad_seq, pruned=lineage.pruned_fs,
                              current=current)
        if reason is None and unrebuildable and point.seq in unrebuildable:
            reason = unrebuildable[point.seq]
        if reason is not None and index == 0:
            # The first checkpoint is always resumable: as a fresh attempt.
            decisions.append(Decision(Verdict(reg.name, True), None, not_started=not_started))
            continue
        if reason is not None:
            decisions.append(Decision(Verdict(reg.name, False, reason)))
            continue
        decisions.append(Decision(Verdict(reg.name, True), point, not_started=not_started))
    return decisions


def explain(lineage: Lineage, registered: Sequence[Registered], *, session: str,
            fs_snapshots: Sequence[FsSnapshot] | None,
            first_bad_seq: int | None = None,
            unrebuildable: Mapping[int, str] | None = None) -> list[Verdict]:
    """The verdicts of :func:`decide`."""
    return [d.verdict for d in decide(lineage, registered, session=session,
                                      fs_snapshots=fs_snapshots, first_bad_seq=first_bad_seq,
                                      unrebuildable=unrebuildable)]


def _prefix_mismatch(registered: Sequence[Registered], index: int, runs: list[Run],
                     lineage: Lineage) -> str | None:
    """Why the checkpoints before ``index`` do not match the runs that made the state."""
    for j in range(index):
        reg = registered[j]
        run = runs[j] if j < len(runs) else None
        if run is None:
            return f"never completed: {reg.name!r} has not completed in the current lineage"
        if run.checkpoint != reg.name:
            return (f"registration mismatch: position {j + 1} is {reg.name!r} but the "
                    f"recorded run {'completed' if run.completed else 'started'} "
                    f"{run.checkpoint!r} there")
        if run.completed is None:
            if _failed(run, lineage):
                return f"predecessor {reg.name!r} failed; resume from {reg.name!r} first"
            return f"never completed: {reg.name!r} has not completed in the current lineage"
        if run.completed.fingerprint != reg.fingerprint:
            return (f"registration mismatch: {reg.name!r} is registered differently "
                    "(call, arguments or version) from the run that completed it")
    return None


def _failed(run: Run, lineage: Lineage) -> bool:
    return run.before is not None and lineage.failed_runs.get(run.before.seq) == run.checkpoint


def _unavailable(point: SnapshotPoint, chain: list[SnapshotPoint], *, session: str,
                 fs_snapshots: Sequence[FsSnapshot] | None,
                 first_bad_seq: int | None,
                 pruned: frozenset[tuple[str, str]] | set[tuple[str, str]],
                 current: set[int] | None = None) -> str | None:
    """Why the state at ``point`` cannot be restored, or None when it can.

    Every filesystem snapshot recorded in the chain up to ``point`` must still
    exist, in order (the original engine's rule: a lost snapshot in the middle
    ends what can be resumed), except those a ``pruned`` event removed on purpose.
    Only points of the ``current`` runs count: a run superseded by a later run of
    the same checkpoint took snapshots whose names that later run took again.
    """
    if point.session != session and not point.durable:
        return (f"snapshot only volatile: {point.label} was taken by session {point.session}, "
                "which has ended, before the install target was attached")
    upto = chain[: chain.index(point) + 1] if point in chain else [point]
    if first_bad_seq is not None:
        for p in upto:
            if p.seq >= first_bad_seq or any(d >= first_bad_seq for d in p.diffs):
                return (f"log damaged: event {first_bad_seq} fails verification, so "
                        f"{point.label} cannot be rebuilt")
    if fs_snapshots is not None:
        if current is not None:
            upto = [p for p in upto if p.seq in current or p is point]
        position = {(s.name, s.id): i for i, s in enumerate(fs_snapshots)}
        # A name taken again later in the chain (after a rollback to it) supersedes
        # the earlier one: only the latest point holding each name is checked.
        latest = {p.fs_snapshot: p for p in upto if p.fs_snapshot is not None}
        last = -1
        for p in upto:
            if p.fs_snapshot is None or latest[p.fs_snapshot] is not p:
                continue
            where = position.get((p.fs_snapshot, p.fs_id or ""))
            if where is None and p is not point and (p.fs_snapshot, p.fs_id or "") in pruned:
                # prune removed it on purpose and recorded so: rolling back restores this
                # point's own snapshot only, so a deliberately pruned ancestor is no loss.
                continue
            if where is None:
                # name the point that took it: a later point of the same state shares it
                taker = next(q for q in upto
                             if (q.fs_snapshot, q.fs_id) == (p.fs_snapshot, p.fs_id))
                return (f"filesystem snapshot missing: {p.fs_snapshot} (taken at "
                        f"{taker.label}) is gone")
            if where < last:
                return (f"filesystem snapshots out of order: {p.fs_snapshot} is older than "
                        "an earlier point's snapshot")
            last = where
    return None



@dataclass(frozen=True, slots=True)
class FsSnapshotCheck:
    """Whether the target still holds the filesystem snapshot recorded with ``point``."""

    point: SnapshotPoint
    present: bool


def check_fs_snapshots(lineage: Lineage,
                       fs_snapshots: Sequence[FsSnapshot]) -> list[FsSnapshotCheck]:
    """The filesystem snapshot of every point of the current lineage, oldest first.

    For an audit without a plan: what the log says the target holds, against
    what it holds. A snapshot that a rollback, a cleanup or a prune removed on
    purpose counts as present: a rollback and a cleanup take its points out of
    the current lineage, and a prune records the snapshots it destroyed. Only
    the latest point holding each name counts, as in the rules.
    """
    held = {(s.name, s.id) for s in fs_snapshots} | lineage.pruned_fs
    taken: dict[tuple[str, str], SnapshotPoint] = {}  # each snapshot at the point that took it
    for run in lineage.runs():
        for p in (run.before, run.completed):
            if p is not None and p.fs_snapshot is not None:
                taken.setdefault((p.fs_snapshot, p.fs_id or ""), p)
    latest = {p.fs_snapshot: p for p in sorted(taken.values(), key=lambda p: p.seq)}
    return [FsSnapshotCheck(p, (p.fs_snapshot, p.fs_id or "") in held)
            for p in sorted(latest.values(), key=lambda p: p.seq)]
