"""Every sequence of operations over three checkpoints, to a fixed depth, with the four checks
of the stateful test after every operation.

This drives the pure layer the engine is built on (Recorder, decide, materialize, a
real EventLog and a real DirectoryTarget) through a small harness that mirrors
``InstallEngine._plan`` and ``run_attempt``: the same decisions, the same snapshot
points, the same rollbacks. The engine's own process costs (opening, locking,
lifecycle events) would buy only a fraction of the depth.

Sequences are explored depth first. A world is cloned (its files and the recorder's
memory) before each branch, so every prefix runs once. An operation that changes
nothing (a refused resume, attaching twice, deleting a file that is not there) is
checked and not extended: whatever follows it is a shorter sequence already covered.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind, EventLog
from installengine.snapshots import (
    DataCache,
    DirectoryTarget,
    Lineage,
    Recorder,
    Registered,
    SnapshotPoint,
    SnapshotStore,
    When,
    materialize,
    read_lineage,
    state_digest,
)
from installengine.snapshots import recorder as recorder_module
from installengine.snapshots.recorder import PointRequest

NAMES = ["a", "b", "c"]
OPS = ["run", "fail", "pause", "crash", "attach", "delete-file", "change-registration",
       *(f"resume:{n}" for n in NAMES)]
DEPTH = int(os.environ.get("INSTALLENGINE_EXHAUSTIVE_DEPTH", "4"))


def fast_tmp() -> str:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


@dataclass
class World:
    """One install's state: its files under ``root`` and the session's memory."""

    root: Path
    rec: Recorder
    attached: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    counter: int = 0

    @property
    def target(self) -> DirectoryTarget:
        return DirectoryTarget(self.root / "install")

    def registered(self) -> list[Registered]:
        return [Registered(n, f"{n}:{self.versions.get(n, '')}") for n in NAMES]


def new_session(root: Path, *, attached: bool) -> Recorder:
    """What an engine opening does: a new session on the target's log, or a new temp area."""
    session = uuid.uuid4().hex[:12]
    if attached:
        target = DirectoryTarget(root / "install")
        log = EventLog.open(target.state_dir / "log.db", durable=True)
        store = SnapshotStore(target.state_dir / "snapshots", durable=True)
    else:
        area = root / f"area-{session}"
        log = EventLog.open(area / "log.db", durable=False)
        store = SnapshotStore(area / "snapshots", durable=False)
    rec = Recorder(log, store, DataCache(), session=session, durable=attached,
                   target=DirectoryTarget(root / "install") if attached else None)
    rec.append(EventKind.SESSION_STARTED, data={"id": session})
    return rec


def clone(world: World, into: Path) -> World:
    """An independent copy: the files, and the recorder's memory re-pointed at them."""
    src = world.rec
    log_rel = src.log.path.relative_to(world.root)
    shutil.copytree(world.root, into, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n.startswith("log.db")])
    src.log.copy_to(into / log_rel)
    target = DirectoryTarget(into / "install") if world.attached else None
    log = EventLog.open(into / log_rel, durable=world.attached)
    store = SnapshotStore(into / src.store.directory.relative_to(world.root),
                          durable=world.attached)
    cache = DataCache(src.cache.to_plain())
    cache._pending = copy.deepcopy(src.cache._pending)
    rec = Recorder(log, store, cache, session=src.session, durable=src.durable, target=target,
                   first_bad_seq=src.first_bad_seq)
    rec.base, rec.touched = src.base, src.touched
    rec._since_file, rec._last_file_size = src._since_file, src._last_file_size
    return World(into, rec, world.attached, dict(world.versions), world.generation,
                 world.counter)


def close(world: World) -> None:
    world.rec.log.close()
    shutil.rmtree(world.root, ignore_errors=True)


def materialized(rec: Recorder, point: SnapshotPoint, *, files: bool = True,
                 lineage: Lineage | None = None) -> dict[str, Any]:
    state, tree = materialize(rec.log, lineage or read_lineage(rec.log), point.seq,
                              rec.store if files else None)
    assert tree.hexdigest() == point.digest
    return state


def view_done(world: World) -> int:
    """InstallEngine._view_done: leading registered checkpoints completed in this view."""
    count = 0
    for reg, point in zip(world.registered(), world.rec.view_completed(), strict=False):
        if (reg.name, reg.fingerprint) != (point.checkpoint, point.fingerprint):
            break
        count += 1
    return count


def execute(world: World, *, start_from: str | None = None, pause_before: str | None = None,
            fail_first: bool = False) -> bool:
    """InstallEngine.execute over the harness; False when it was refused or ran nothing."""
    rec = world.rec
    regs = world.registered()
    decisions = rec.decide(regs)
    done = view_done(world)
    begin = done if start_from is None else NAMES.index(start_from)
    end = NAMES.index(pause_before) if pause_before else len(NAMES)
    if start_from is not None and not decisions[begin].verdict.resumable:
        reason = decisions[begin].verdict.reason
        assert reason
        assert "\n" not in reason
        return False  # NotResumableError, before anything is touched
    if end <= begin:
        return False  # UsageError for pause_before, or everything has completed
    expected = rec.cache.to_plain()
    if start_from is not None:
        d = decisions[begin]
        continuation = rec.touched and begin == done and d.not_started
        if d.point is not None and not continuation:
            expected = materialized(rec, d.point)
            rec.rollback_to(d.point, checkpoint=start_from, attempt=1)
    # Check 3: the first checkpoint starts from the state the rules promised.
    assert rec.cache.to_plain() == expected
    p = rec.cache.persistent
    # As run_attempt does: "X completed" is recorded with "before Y", in one transaction.
    pending: Registered | None = None
    for index in range(begin, end):
        reg = regs[index]
        requests = [PointRequest(pending.name, When.COMPLETED, pending.fingerprint, 1)] \
            if pending is not None else []
        requests.append(PointRequest(reg.name, When.BEFORE, reg.fingerprint, 1))
        before = rec.take_points(requests)[-1]
        pending = None
        if index == begin:
            assert before.digest == state_digest(expected)
        rec.cache.actor = reg.name
        world.counter += 1
        p[reg.name] = world.counter
        p.setdefault("trail", []).append(reg.name)
        rec.cache.actor = None
        if fail_first and index == begin:
            rec.append(EventKind.CHECKPOINT_FAILED, checkpoint=reg.name,
                       data={"before": before.seq})
            return True
        pending = reg
    if pending is not None:
        rec.take_points([PointRequest(pending.name, When.COMPLETED, pending.fingerprint, 1)])
    return True


def apply_op(world: World, op: str) -> bool:
    """Apply ``op``; whether it changed anything."""
    rec = world.rec
    if op == "run":
        return execute(world)
    if op == "fail":
        return execute(world, fail_first=True)
    if op == "pause":
        begin = view_done(world)
        if begin + 1 >= len(NAMES):
            return False  # no checkpoint left to pause before
        return execute(world, pause_before=NAMES[begin + 1])
    if op.startswith("resume:"):
        return execute(world, start_from=op.split(":", 1)[1])
    if op in ("crash", "change-registration"):
        if op == "change-registration":
            world.generation += 1
            world.versions["b"] = f"v{world.generation}"
            rec.append(EventKind.SESSION_ENDED, data={})
        rec.log.close()  # a crash: no session-ended
        world.rec = new_session(world.root, attached=world.attached)
        return True
    if op == "attach":
        if world.attached:
            return False
        target = world.target
        target.prepare()
        dest = target.state_dir / "log.db"
        rec.log.copy_to(dest)  # InstallEngine.attach_target for a target without a log
        old, rec.log = rec.log, EventLog.open(dest, durable=True)
        rec.store = SnapshotStore(target.state_dir / "snapshots", durable=True)
        rec.durable, rec.target = True, target
        rec.lineage = read_lineage(rec.log)
        old.close()
        rec.append(EventKind.TARGET_ATTACHED, data={"spec": target.spec})
        world.attached = True
        return True
    if op == "delete-file":
        files = rec.store.files()
        if not files:
            return False
        files[-1].path.unlink()
        return True
    raise AssertionError(op)


def check(world: World) -> None:
    """The four checks of tests/stateful/test_resumability.py (the third runs in execute)."""
    rec = world.rec
    lineage = read_lineage(rec.log)  # from the log, not the recorder's own running fold
    assert lineage == rec.lineage
    decisions = rec.decide(world.registered())
    assert [d.verdict.name for d in decisions] == NAMES
    assert decisions[0].verdict.resumable, "the first checkpoint is always resumable"
    fs = rec.fs_snapshots()
    listed = {(s.name, s.id) for s in fs} if fs is not None else None
    for index, d in enumerate(decisions):
        assert (d.verdict.reason is None) == d.verdict.resumable
        if not d.verdict.resumable:
            continue
        if d.point is None:
            assert index == 0
            continue
        point = d.point
        ev = rec.log.get(point.seq)
        assert ev is not None
        assert ev.kind == EventKind.SNAPSHOT_TAKEN
        if point.session != rec.session:
            assert point.durable, f"{d.verdict.name}: an earlier session's point is volatile"
        materialized(rec, point, lineage=lineage)
        materialized(rec, point, files=False, lineage=lineage)
        done = {(p.checkpoint, p.fingerprint) for p in lineage.chain(point.seq)
                if p.when is When.COMPLETED}
        for reg in world.registered()[:index]:
            assert (reg.name, reg.fingerprint) in done, (d, reg)
        if listed is not None and point.fs_snapshot is not None:
            assert (point.fs_snapshot, point.fs_id) in listed
    assert rec.log.verify().ok
    assert rec.cache.digest() == state_digest(rec.cache.to_plain())


@dataclass
class Coverage:
    nodes: int = 0
    unchanged: int = 0
    leaves: int = 0
    by_depth: dict[int, int] = field(default_factory=dict)


def explore(world: World, depth: int, path: list[str], work: Path, counter: itertools.count[int],
            coverage: Coverage) -> None:
    if depth == 0:
        coverage.leaves += 1
        return
    for op in OPS:
        branch = clone(world, work / f"w{next(counter)}")
        try:
            try:
                changed = apply_op(branch, op)
                check(branch)
            except AssertionError as err:
                raise AssertionError(f"after {[*path, op]}: {err}") from err
            coverage.nodes += 1
            level = len(path) + 1
            coverage.by_depth[level] = coverage.by_depth.get(level, 0) + 1
            if changed:
                explore(branch, depth - 1, [*path, op], work, counter, coverage)
            else:
                coverage.unchanged += 1
        finally:
            close(branch)


@pytest.fixture
def files_at_every_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # Snapshot files normally wait for 256 KB of changes; write one at (almost) every
    # point here, so deleting a file and falling back to the log is part of every history.
    monkeypatch.setattr(recorder_module, "MIN_FILE_INTERVAL", 0)


@pytest.mark.usefixtures("files_at_every_point")
def test_every_sequence_of_operations_keeps_the_invariant(capsys):
    work = Path(tempfile.mkdtemp(prefix="exhaustive-", dir=fast_tmp()))
    started = time.perf_counter()
    coverage = Coverage()
    try:
        root = work / "start"
        root.mkdir()
        world = World(root, new_session(root, attached=False))
        check(world)
        explore(world, DEPTH, [], work, itertools.count(), coverage)
        close(world)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nexhaustive: {len(NAMES)} checkpoints, {len(OPS)} operations, depth {DEPTH}: "
              f"{coverage.nodes} operations checked ({coverage.by_depth}), "
              f"{coverage.leaves} sequences of length {DEPTH}, {coverage.unchanged} no-op "
              f"branches not extended, in {elapsed:.1f} s")
    assert coverage.leaves > 0
