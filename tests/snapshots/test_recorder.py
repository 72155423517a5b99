"""Recorder: snapshot points as one transaction, and rollbacks that change all or nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from installengine.eventlog import EventKind, EventLog, UsageError
from installengine.snapshots import (
    DataCache,
    DirectoryTarget,
    Recorder,
    SnapshotPoint,
    SnapshotStore,
    SnapshotUnavailableError,
    StateDir,
    Target,
    TargetError,
    When,
    apply,
    state_digest,
)
from installengine.statemachine import InstallEngine


def make_recorder(state_dir: Path, target: Target | None, *, durable: bool = True) -> Recorder:
    log = EventLog.open(state_dir / "log.db", durable=durable)
    store = SnapshotStore(state_dir / "snapshots", durable=durable)
    return Recorder(log, store, DataCache(), session="s1", durable=durable, target=target)


@pytest.fixture
def dir_target(tmp_path: Path) -> DirectoryTarget:
    target = DirectoryTarget(tmp_path / "install")
    target.prepare()
    return target


@pytest.fixture
def rec(dir_target: DirectoryTarget) -> Iterator[Recorder]:
    recorder = make_recorder(dir_target.state_dir, dir_target)
    yield recorder
    recorder.log.close()


def take(rec: Recorder, name: str, when: When = When.COMPLETED, attempt: int = 1) -> SnapshotPoint:
    return rec.take_point(name, when, fingerprint=f"fp-{name}", attempt=attempt)


def test_a_point_appends_the_diffs_by_actor_then_the_point(rec):
    rec.cache.persistent["app"] = 1
    rec.cache.actor = "partition"
    rec.cache.persistent["disk"] = {"size": 10}
    rec.cache.persistent["disk"]["size"] = 20
    rec.cache.actor = None
    rec.cache.persistent["app"] = 2
    point = take(rec, "partition")
    events = list(rec.log.query())
    assert [e.kind for e in events] == ["cache-changed"] * 3 + ["snapshot-taken"]
    assert [e.data["by"] for e in events[:3]] == ["application", "partition", "application"]
    assert [e.checkpoint for e in events[:3]] == [None, "partition", None]
    assert point.diffs == tuple(e.seq for e in events[:3])
    assert point.digest == rec.cache.digest() == state_digest({"app": 2, "disk": {"size": 20}})
    assert (point.checkpoint, point.when, point.fingerprint, point.attempt, point.durable) == (
        "partition", When.COMPLETED, "fp-partition", 1, True)
    assert point.parent is None
    assert rec.base == point.seq


def test_a_point_without_changes_appends_no_diff(rec):
    first = take(rec, "a", When.BEFORE)
    second = take(rec, "a")
    assert second.diffs == ()
    assert second.parent == first.seq
    assert second.digest == first.digest


def test_the_diffs_in_the_log_replay_to_the_cache(rec):
    p = rec.cache.persistent
    for i in range(5):
        p[f"k{i}"] = list(range(i))
        if i:
            p[f"k{i - 1}"].append({"x": i})
        if i == 3:
            p.pop("k1")
        take(rec, f"c{i}")
    state: dict = {}
    for ev in rec.log.query(kind=EventKind.CACHE_CHANGED):
        state = apply(state, ev.data["patch"])
    assert state == rec.cache.to_plain()


def test_a_durable_point_takes_the_named_filesystem_snapshot(rec, dir_target):
    (dir_target.root / "file").write_text("1")
    before = take(rec, "format", When.BEFORE)
    done = take(rec, "format", When.COMPLETED)
    assert (before.fs_snapshot, done.fs_snapshot) == (".step_format.before", ".step_format.done")
    listed = {s.name: s.id for s in dir_target.list_snapshots()}
    assert listed == {".step_format.before": before.fs_id, ".step_format.done": done.fs_id}


def test_a_volatile_point_or_a_state_only_target_takes_no_filesystem_snapshot(tmp_path,
                                                                              dir_target):
    volatile = make_recorder(tmp_path / "area", dir_target, durable=False)
    assert take(volatile, "a").fs_snapshot is None
    assert dir_target.list_snapshots() == []
    state = StateDir(tmp_path / "state")
    state.prepare()
    durable = make_recorder(state.state_dir, state)
    point = take(durable, "a")
    assert point.durable
    assert point.fs_snapshot is None


def test_a_failed_filesystem_snapshot_records_no_point_and_keeps_the_changes(rec, dir_target):
    rec.cache.persistent["a"] = 1
    head = rec.log.head
    fs_dir = dir_target.state_dir / "fs"
    fs_dir.rmdir()
    fs_dir.write_text("not a directory")  # a real failure: the copies have nowhere to go
    with pytest.raises(TargetError):
        take(rec, "a", When.BEFORE)
    assert rec.log.head == head
    assert [c.op["path"] for c in rec.cache.take_changes()] == ["/a"]


def test_a_failed_append_records_no_point_and_keeps_the_changes(tmp_path):
    rec = make_recorder(tmp_path, None, durable=False)
    rec.cache.persistent["a"] = 1
    rec.log.close()
    with pytest.raises(UsageError):
        take(rec, "a")
    assert [c.op["path"] for c in rec.cache.take_changes()] == ["/a"]
    assert rec.base is None


def test_rollback_restores_cache_and_filesystem_and_destroys_later_snapshots(rec, dir_target):
    p = rec.cache.persistent
    (dir_target.root / "a.txt").write_text("a")
    p["a"] = 1
    back_to = take(rec, "b", When.BEFORE)
    (dir_target.root / "b.txt").write_text("b")
    (dir_target.root / "a.txt").write_text("changed")
    p["b"] = {"x": [1]}
    take(rec, "b")
    take(rec, "c", When.BEFORE)
    rec.cache.volatile["session-only"] = object()
    event = rec.rollback_to(back_to, checkpoint="b", attempt=2)
    assert rec.cache.to_plain() == {"a": 1}
    assert rec.cache.digest() == back_to.digest
    assert sorted(p.name for p in dir_target.root.iterdir()) == [".installengine", "a.txt"]
    assert (dir_target.root / "a.txt").read_text() == "a"
    assert [s.name for s in dir_target.list_snapshots()] == [".step_b.before"]
    assert event.kind == EventKind.ROLLED_BACK
    assert event.data["to"] == back_to.seq
    assert event.data["abandoned"] == ["b"]
    assert event.data["destroyed_fs_snapshots"] == [".step_b.done", ".step_c.before"]
    assert rec.lineage.head == back_to.seq
    assert rec.base == back_to.seq
    assert "session-only" in rec.cache.volatile  # rollback never touches volatile
    p["b"] = 2
    after = take(rec, "b", When.COMPLETED, attempt=2)
    assert after.parent == back_to.seq


def test_a_rollback_that_cannot_rebuild_changes_nothing(rec, dir_target):
    rec.cache.persistent["a"] = 1
    back_to = take(rec, "b", When.BEFORE)
    rec.cache.persistent["b"] = 2
    (dir_target.root / "b.txt").write_text("b")
    take(rec, "b")
    ev = rec.log.get(back_to.diffs[0])
    assert ev is not None
    with sqlite3.connect(rec.log.path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = ?",
                     (orjson.dumps({**ev.data, "patch": [
                         {"op": "add", "path": "/a", "value": 666}]}).decode(), ev.seq))
    rec.cache.persistent["pending"] = True
    snapshot = (rec.cache.to_plain(), rec.log.head, dir_target.list_snapshots(),
                sorted(p.name for p in dir_target.root.iterdir()))
    with pytest.raises(SnapshotUnavailableError):
        rec.rollback_to(back_to, checkpoint="b", attempt=2)
    assert (rec.cache.to_plain(), rec.log.head, dir_target.list_snapshots(),
            sorted(p.name for p in dir_target.root.iterdir())) == snapshot
    assert [c.op["path"] for c in rec.cache.take_changes()] == ["/pending"]


def test_rollback_uses_a_snapshot_file_when_there_is_one(rec):
    take(rec, "start")  # a first point needs no file: the log alone rebuilds it
    rec.cache.persistent["big"] = "x" * 300_000  # past the threshold: a file is written
    point = take(rec, "a")
    assert rec.store.has(point.seq, point.digest)
    rec.cache.persistent["big"] = "y"
    take(rec, "b")
    rec.rollback_to(point, checkpoint="b", attempt=2)
    assert rec.cache.persistent["big"] == "x" * 300_000


def test_rebase_records_the_whole_cache_so_the_next_point_needs_no_parent(rec):
    rec.cache.persistent["a"] = {"b": 1}
    take(rec, "a")
    rec.rebase()
    point = take(rec, "a", When.BEFORE)
    assert point.parent is None
    assert rec.materialize(point) == {"a": {"b": 1}}


def test_verify_files_tells_good_corrupt_and_rebuildable_files_apart(rec):
    take(rec, "start")
    rec.cache.persistent["big"] = "x" * 300_000
    good = take(rec, "a")
    rec.cache.persistent["big"] = "z" * 300_000
    bad = take(rec, "b")
    assert rec.store.has(good.seq, good.digest)
    assert rec.store.has(bad.seq, bad.digest)
    rec.store.write(bad.seq, bad.digest, b'{"big": "tampered"}')
    report = {Path(f).name: (ok, rebuildable) for f, ok, rebuildable in rec.verify_files()}
    assert report[rec.store.path_for(good.seq, good.digest).name] == (True, False)
    assert report[rec.store.path_for(bad.seq, bad.digest).name] == (False, True)


def test_the_engine_never_logs_or_snapshots_the_volatile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTALLENGINE_TMPDIR", str(tmp_path / "tmp"))
    secret = "volatile-secret-4242"
    with InstallEngine(target=f"dir:{tmp_path / 'install'}") as engine:
        engine.register("a", remember_secret)
        engine.volatile["password"] = secret
        engine.cache["visible"] = 1
        engine.execute()
        assert engine.volatile["seen"] == secret
        engine.execute(start_from="a")
        assert engine.volatile["password"] == secret  # the rollback left it alone
        state_dir = engine.target.state_dir
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    with EventLog.open(state_dir / "log.db", readonly=True) as log:
        assert all(secret not in orjson.dumps(ev.data).decode() for ev in log.query())


def remember_secret(ctx) -> None:
    ctx.volatile["seen"] = ctx.volatile["password"]
    ctx.cache["ran"] = ctx.cache.get("ran", 0) + 1


def test_many_small_changes_get_a_snapshot_file_before_a_resume_would_fold_too_many(tmp_path):
    from installengine.snapshots import recorder as recorder_module

    rec = make_recorder(tmp_path, StateDir(tmp_path), durable=False)
    rec.cache.persistent["big"] = "x" * 100_000  # the first point: in the log, no file
    take(rec, "first")
    assert rec.store.files() == []
    # 100-byte changes: far from the 256 KB of change that alone would call for a file
    every = recorder_module.MIN_DIFFS_BETWEEN_FILES
    points = []
    for i in range(every + 5):
        rec.cache.persistent["n"] = f"{i:0100d}"
        points.append(take(rec, f"c{i}"))
    (file,) = rec.store.files()
    assert file.seq == points[every - 2].seq  # the first point's change counts too
    # a point without changes adds nothing to fold, so it does not count
    before = len(rec.store.files())
    for i in range(every):
        take(rec, f"idle{i}")
    assert len(rec.store.files()) == before
    rec.log.close()
