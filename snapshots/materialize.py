"""The state at a snapshot point: the nearest verified snapshot file plus later diffs.

Like eventsourcing's Repository: start from the newest cached state at or
before the point, fold the later changes, and check the result. Files are
caches; the log is the truth, so a bad file only costs time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import orjson
from installengine.eventlog import EventKind, EventLog, LogIntegrityError

from .diff import apply
from .digest import DigestTree, state_digest
from .errors import SnapshotUnavailableError
from .lineage import Lineage
from .points import SnapshotPoint
from .rules import Decision, Registered, decide
from .store import SnapshotStore
from .targets.base import FsSnapshot

logger = logging.getLogger(__name__)


def materialize(log: EventLog, lineage: Lineage, seq: int,
                store: SnapshotStore | None) -> tuple[dict[str, Any], DigestTree]:
    """The persistent state at point ``seq`` and its digest tree, verified.

    :raises SnapshotUnavailableError: when neither files nor the log rebuild a
        state that matches the recorded digest.
    """
    chain = lineage.chain(seq)
    if not chain or chain[-1].seq != seq:
        raise SnapshotUnavailableError(f"snapshot point {seq} is not in the log")
    target = chain[-1]
    tried_files: set[int] = set()
    while True:
        start, state, tree = _nearest_file(chain, lineage, store, tried_files)
        try:
            for point in chain[start + 1 :]:
                state = _fold(log, point, state, tree)
                if start < 0 and tree is None and isinstance(state, dict):
                    tree = _tree_from_log(lineage, point, state)
        except SnapshotUnavailableError:
            if start < 0:
                raise
            tried_files.add(chain[start].seq)
            continue
        if not isinstance(state, dict):
            if start < 0:
                raise SnapshotUnavailableError(f"the state at {target.label} is not an object")
            # A file that parses as JSON but not as an object is as corrupt as any other.
            logger.warning("snapshot file for point %s is not an object; using the log",
                           chain[start].seq)
            tried_files.add(chain[start].seq)
            continue
        if tree is None:
            tree = DigestTree(state)
        if tree.hexdigest() == target.digest:
            return state, tree
        if start < 0:
            raise SnapshotUnavailableError(_mismatch(target, tree))
        logger.warning("snapshot file for point %s did not verify; using the log",
                       chain[start].seq)
        tried_files.add(chain[start].seq)


def _mismatch(point: SnapshotPoint, tree: DigestTree) -> str:
    return (f"digest mismatch: the log rebuilds {point.label} with digest "
            f"{tree.hexdigest()[:12]}, not the recorded {point.digest[:12]}")


def _nearest_file(chain: list[SnapshotPoint], lineage: Lineage, store: SnapshotStore | None,
                  skip: set[int]) -> tuple[int, Any, DigestTree | None]:
    """The latest usable file of ``chain``: its index, its state, and its digest tree if cheap.

    A file the log vouches for (a ``snapshot-stored`` event with its SHA-256)
    gets its digest tree from the sums recorded there instead of hashing every
    entry; a file whose bytes differ from what the log recorded is skipped. Any
    other file (written before those events existed) is checked by rebuilding
    the tree, later.
    """
    if store is not None:
        for i in range(len(chain) - 1, -1, -1):
            p = chain[i]
            if p.seq in skip:
                continue
            raw = store.read(p.seq, p.digest)
            if raw is None:
                continue
            stored = lineage.stored.get(p.seq, {})
            vouched = "sha256" in stored and stored.get("digest") == p.digest
            if vouched and stored["sha256"] != sha256(raw).hexdigest():
                logger.warning("snapshot file for point %s is not the one the log recorded; "
                               "using the log", p.seq)
                skip.add(p.seq)
                continue
            try:
                state = orjson.loads(raw)
            except orjson.JSONDecodeError:
                skip.add(p.seq)
                continue
            tree = None
            if vouched and isinstance(state, dict):
                try:
                    tree = DigestTree.from_sums(state, stored.get("sums"))
                except ValueError:
                    tree = None
            return i, state, tree
    return -1, {}, None


def _tree_from_log(lineage: Lineage, point: SnapshotPoint, state: dict[str, Any]) -> DigestTree | None:
    """The digest tree of ``state``, folded from the log alone up to ``point``, from recorded sums.

    The sums come from the log, like the diffs that made ``state``: they are as
    trustworthy as those diffs, so no file needs vouching for.
    """
    stored = lineage.stored.get(point.seq)
    if stored is None or not stored.get("in_log") or stored.get("digest") != point.digest:
        return None
    try:
        return DigestTree.from_sums(state, stored.get("sums"))
    except ValueError:
        return None


def _fold(log: EventLog, point: SnapshotPoint, state: Any, tree: DigestTree | None) -> Any:
    for diff_seq in point.diffs:
        try:
            ev = log.get(diff_seq)
        except LogIntegrityError as err:
            raise SnapshotUnavailableError(
                f"{point.label}: its change (event {diff_seq}) cannot be read: {err}") from err
        if ev is None or ev.kind != EventKind.CACHE_CHANGED:
            raise SnapshotUnavailableError(
                f"{point.label}: its change (event {diff_seq}) is missing from the log")
        try:
            state = apply(state, ev.data["patch"], tree)
        except Exception as err:
            raise SnapshotUnavailableError(
                f"{point.label}: change event {diff_seq} does not apply: {err}") from err
    return state


def unrebuildable(log: EventLog, lineage: Lineage, points: list[SnapshotPoint],
                  store: SnapshotStore | None) -> dict[int, str]:
    """Which of ``points`` the log and files do not rebuild to their digest, with the reason.

    Points on one chain are checked in one pass: the earliest is materialized,
    then the diffs are folded forward and the digest tree compared at each
    later point, so checking every point of an install costs about one
    materialization, not one per point.
    """
    bad: dict[int, str] = {}
    todo = sorted(points, key=lambda p: p.seq)
    while todo:
        last = todo[-1]
        chain = lineage.chain(last.seq)
        on_chain = {p.seq for p in chain}
        group = [p for p in todo if p.seq in on_chain]
        todo = [p for p in todo if p.seq not in on_chain]
        wanted = {p.seq for p in group}
        state: Any = None
        tree: DigestTree | None = None
        for point in chain[chain.index(group[0]):]:
            why: str | None = None
            if state is None or tree is None:
                try:
                    state, tree = materialize(log, lineage, point.seq, store)
                except SnapshotUnavailableError as err:
                    # a later point may still rebuild, from a file of its own
                    why, state = str(err), None
            else:
                try:
                    state = _fold(log, point, state, tree)
                except SnapshotUnavailableError as err:
                    why, state = str(err), None
                else:
                    if tree.hexdigest() != point.digest:
                        why = _mismatch(point, tree)
                        state = None  # what follows would fold onto a wrong state
            if why is not None and point.seq in wanted:
                bad[point.seq] = why
    return bad


def decide_rebuilt(log: EventLog, lineage: Lineage, registered: Sequence[Registered], *,
                   store: SnapshotStore | None, session: str,
                   fs_snapshots: Sequence[FsSnapshot] | None, first_bad_seq: int | None,
                   rebuilt: set[int], found: dict[int, str]) -> list[Decision]:
    """The rules' decisions, with every point they would resume from rebuilt and checked.

    ``rebuilt`` and ``found`` carry what earlier calls learnt (a point's result
    never changes: the log only grows), and are updated here.
    """
    def rules() -> list[Decision]:
        return decide(lineage, registered, session=session, fs_snapshots=fs_snapshots,
                      first_bad_seq=first_bad_seq, unrebuildable=found)

    decisions = rules()
    todo = [d.point for d in decisions if d.verdict.resumable and d.point is not None
            and d.point.seq not in rebuilt]
    if not todo:
        return decisions
    bad = unrebuildable(log, lineage, todo, store)
    rebuilt.update(p.seq for p in todo)
    if not bad:
        return decisions
    found.update(bad)
    return rules()


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One snapshot file as verify sees it; ``rebuildable`` is None for a good file."""

    file: str
    ok: bool
    rebuildable: bool | None


def check_files(log: EventLog, lineage: Lineage, store: SnapshotStore) -> Iterator[FileCheck]:
    """Check every snapshot file against its point's digest, and whether the log rebuilds a bad one."""
    for f in store.files():
        point = lineage.points.get(f.seq)
        raw = store.read(f.seq, f.digest)
        ok = False
        stored = lineage.stored.get(f.seq, {})
        if raw is not None and point is not None and point.digest == f.digest:
            try:
                ok = state_digest(orjson.loads(raw)) == f.digest
            except orjson.JSONDecodeError:
                ok = False
            # The engine skips a file whose bytes are not those the log recorded.
            ok = ok and stored.get("sha256") in (None, sha256(raw).hexdigest())
        rebuildable: bool | None = None
        if not ok:
            rebuildable = False
            if point is not None:
                try:
                    materialize(log, lineage, f.seq, None)
                    rebuildable = True
                except (SnapshotUnavailableError, LogIntegrityError):
                    rebuildable = False
        yield FileCheck(str(f.path), ok, rebuildable)
