"""The lineage: points form a tree through ``parent``; the head is where the install stands."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from installengine.eventlog import Event, EventKind, EventLog
from installengine.snapshots import (
    DataCache,
    FsSnapshot,
    Lineage,
    Recorder,
    SnapshotStore,
    When,
    fold,
    fs_snapshot_name,
    read_lineage,
)


def fingerprint(name: str, version: str = "") -> str:
    return f"fp:{name}:{version}"


class History:
    """Synthetic events as the engine appends them, and the target's snapshots alongside.

    Enough of the log for the lineage and the rules: points with their parent,
    failures with their before-point, rollbacks (which destroy later filesystem
    snapshots, as targets do), cleanups and sessions. Within one execution, "X
    completed" and "before Y" share one filesystem snapshot, ``.step_X.done``, as
    the runner records them in one transaction; an execution's first before-point
    takes its own ``.step_<checkpoint>.before``.
    """

    def __init__(self, session: str = "s1", *, durable: bool = True,
                 takes_fs: bool = True) -> None:
        self.events: list[Event] = []
        self.session = session
        self.durable = durable
        self.takes_fs = takes_fs
        self.base: int | None = None
        #: the target's filesystem snapshots, oldest first
        self.fs: list[FsSnapshot] = []
        self.start_session(session)

    def event(self, kind: EventKind, checkpoint: str | None = None, **data: Any) -> Event:
        seq = len(self.events) + 1
        ev = Event(seq, self.session, f"2024-01-01T00:00:{seq:02d}+00:00", kind.value, checkpoint,
                   data, "0" * 64, f"{seq:064x}")
        self.events.append(ev)
        return ev

    def start_session(self, session: str) -> None:
        """A restart: a new session; its first point has no parent."""
        self.session = session
        self.base = None
        self.event(EventKind.SESSION_STARTED)

    def point(self, name: str, when: When, *, version: str = "",
              share: FsSnapshot | None = None) -> int:
        fs_name = fs_id = None
        if share is not None:
            fs_name, fs_id = share.name, share.id
        elif self.durable and self.takes_fs:
            fs_name = fs_snapshot_name(name, when)
            self.fs = [s for s in self.fs if s.name != fs_name]
            fs_id = f"{len(self.events) + 1:020d}"
            self.fs.append(FsSnapshot(fs_name, fs_id))
        diffs = [] if share is not None else [
            self.event(EventKind.CACHE_CHANGED, name, patch=[], base=self.base).seq]
        ev = self.event(EventKind.SNAPSHOT_TAKEN, name, point=when.value,
                        digest=f"{len(self.events):064x}", durable=self.durable,
                        fingerprint=fingerprint(name, version), parent=self.base,
                        diffs=diffs, fs_snapshot=fs_name, fs_id=fs_id, attempt=1)
        self.base = ev.seq
        return ev.seq

    def before(self, name: str, *, version: str = "") -> int:
        return self.point(name, When.BEFORE, version=version)

    def done(self, name: str, *, version: str = "") -> int:
        return self.point(name, When.COMPLETED, version=version)

    def execution(self, *steps: str, attach_in: str | None = None) -> None:
        """One execute(): ``"x"`` runs x; ``"x!"`` fails it (end the steps there to stop,
        go on for ``stop_on_error=False``). ``attach_in`` attaches the target while it runs."""
        shared: FsSnapshot | None = None
        for step in steps:
            name = step.rstrip("!")
            before = self.point(name, When.BEFORE, share=shared)
            shared = None
            if name == attach_in:
                self.durable = True
            if step.endswith("!"):
                self.event(EventKind.CHECKPOINT_FAILED, name, before=before)
                continue
            seq = self.done(name)
            done = self.lineage().points[seq]
            if done.fs_snapshot is not None and done.fs_id is not None:
                shared = FsSnapshot(done.fs_snapshot, done.fs_id)

    def run(self, *names: str) -> None:
        self.execution(*names)

    def fail(self, name: str) -> int:
        self.execution(f"{name}!")
        return self.seq_of(name, When.BEFORE)

    def rollback(self, to: int) -> None:
        self.event(EventKind.ROLLED_BACK, to=to)
        self.base = to
        fs_name = self.lineage().points[to].fs_snapshot
        names = [s.name for s in self.fs]
        if fs_name in names:
            self.fs = self.fs[: names.index(fs_name) + 1]

    def cleanup(self) -> None:
        self.event(EventKind.CLEANUP)
        self.base = None
        self.fs = []

    def destroy(self, *fs_names: str) -> None:
        self.fs = [s for s in self.fs if s.name not in fs_names]

    def lineage(self) -> Lineage:
        return fold(self.events)

    def seq_of(self, name: str, when: When, nth: int = -1) -> int:
        """The seq of the nth point of ``name`` at ``when`` (default: the latest)."""
        found = [ev.seq for ev in self.events if ev.kind == EventKind.SNAPSHOT_TAKEN
                 and ev.checkpoint == name and ev.data["point"] == when.value]
        return found[nth]


def names(points: list[Any]) -> list[str]:
    return [f"{p.when.value}:{p.checkpoint}" for p in points]


def test_the_head_is_the_latest_point_and_the_chain_leads_to_it():
    h = History()
    h.run("a", "b")
    lineage = h.lineage()
    assert lineage.head == h.seq_of("b", When.COMPLETED)
    assert names(lineage.chain()) == ["before:a", "completed:a", "before:b", "completed:b"]
    assert names(lineage.completed()) == ["completed:a", "completed:b"]


def test_a_rollback_moves_the_head_back_and_abandons_later_completions():
    h = History()
    h.run("a", "b", "c")
    h.rollback(h.seq_of("b", When.BEFORE))
    lineage = h.lineage()
    assert lineage.head == h.seq_of("b", When.BEFORE)
    assert names(lineage.completed()) == ["completed:a"]
    assert len(lineage.points) == 6  # history stays


def test_points_after_a_rollback_branch_from_its_target():
    h = History()
    h.run("a", "b")
    back = h.seq_of("b", When.BEFORE)
    h.rollback(back)
    h.before("b")
    lineage = h.lineage()
    assert lineage.points[lineage.head].parent == back
    assert names(lineage.chain()) == ["before:a", "completed:a", "before:b", "before:b"]
    # the abandoned branch is still there for audits, and its own chain is intact
    assert names(lineage.chain(h.seq_of("b", When.COMPLETED))) == [
        "before:a", "completed:a", "before:b", "completed:b"]


def test_cleanup_forgets_the_head():
    h = History()
    h.run("a")
    h.cleanup()
    lineage = h.lineage()
    assert lineage.head is None
    assert lineage.chain() == []
    assert lineage.completed() == []


def test_a_failure_is_remembered_with_its_before_point():
    h = History()
    h.run("a")
    before = h.fail("b")
    assert h.lineage().failed_runs == {before: "b"}


def test_sessions_are_listed_once_in_order():
    h = History("s1")
    h.start_session("s2")
    h.start_session("s1")
    assert h.lineage().sessions == ["s1", "s2"]


def test_a_new_session_starts_a_new_root():
    h = History("s1")
    h.run("a")
    h.start_session("s2")
    h.before("a")
    lineage = h.lineage()
    assert names(lineage.chain()) == ["before:a"]
    assert lineage.chain()[0].session == "s2"


def test_a_cycle_or_a_dangling_parent_ends_the_chain():
    lineage = Lineage()
    h = History()
    h.run("a")
    for ev in h.events:
        lineage.add(ev)
    first, second = sorted(lineage.points)
    lineage.points[first] = dataclasses.replace(lineage.points[first], parent=second)
    assert [p.seq for p in lineage.chain()] == [first, second]
    lineage.points.pop(first)
    assert [p.seq for p in lineage.chain()] == [second]


def test_events_of_other_kinds_are_ignored():
    h = History()
    h.run("a")
    h.event(EventKind.PAUSED)
    h.event(EventKind.EXECUTION_FINISHED, status="SUCCESS")
    assert h.lineage().head == h.seq_of("a", When.COMPLETED)


OPS = st.lists(st.one_of(
    st.tuples(st.just("point"), st.sampled_from("abc"), st.sampled_from(list(When))),
    st.tuples(st.just("rollback"), st.integers(0, 30)),
    st.tuples(st.just("cleanup")),
    st.tuples(st.just("session")),
), max_size=25)


@given(OPS)
def test_the_chain_is_always_a_parent_path_from_a_root_to_the_head(ops):
    h = History()
    sessions = 1
    for op in ops:
        if op[0] == "point":
            h.point(op[1], op[2])
        elif op[0] == "rollback":
            points = sorted(h.lineage().points)
            if points:
                h.rollback(points[op[1] % len(points)])
        elif op[0] == "cleanup":
            h.cleanup()
        else:
            sessions += 1
            h.start_session(f"s{sessions}")
    lineage = h.lineage()
    chain = lineage.chain()
    if lineage.head is None:
        assert chain == []
        return
    assert chain[-1].seq == lineage.head
    assert chain[0].parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent == parent.seq
        assert child.seq > parent.seq
    assert set(map(id, lineage.completed())) <= set(map(id, chain))


def test_read_lineage_of_a_real_log_equals_folding_every_event(tmp_path: Path):
    log = EventLog.open(tmp_path / "log.db", durable=False)
    rec = Recorder(log, SnapshotStore(tmp_path / "snapshots", durable=False), DataCache(),
                   session="s1", durable=False, target=None)
    rec.append(EventKind.SESSION_STARTED, data={})
    for name in "abc":
        rec.cache.persistent[name] = 1
        rec.take_point(name, When.BEFORE, fingerprint=name, attempt=1)
        rec.append(EventKind.CHECKPOINT_STARTED, checkpoint=name, data={})
        rec.take_point(name, When.COMPLETED, fingerprint=name, attempt=1)
    rec.rollback_to(rec.lineage.points[rec.lineage.chain()[2].seq], checkpoint="b", attempt=2)
    rec.append(EventKind.CHECKPOINT_FAILED, checkpoint="b",
               data={"before": rec.lineage.chain()[2].seq})
    from_log = read_lineage(log)
    folded = fold(log.query())
    assert from_log == folded
    assert from_log == rec.lineage  # the recorder's own view was kept up to date
    log.close()
