"""The facade: opening and closing, the cache, exec lists, explain, cleanup and dry runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import (
    EngineStateError,
    InstallEngine,
    NotResumableError,
    Status,
    UsageError,
    Verdict,
)

from tests.statemachine.steps import ref

WAIT = 10.0


def register_all(engine: InstallEngine, names: str = "abcd", call: str = "record") -> None:
    for name in names:
        engine.register(name, ref(call))


def snapshot_points(engine: InstallEngine, when: str | None = None) -> list[str]:
    return [f"{ev.data['point']} {ev.checkpoint}"
            for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)
            if when is None or ev.data["point"] == when]


# -- opening, closing, the cache -----------------------------------------------------------------


def test_engine_is_a_context_manager_that_removes_its_volatile_area(temp_root: Path) -> None:
    with InstallEngine() as engine:
        area = engine.log.path.parent
        assert area.parent.parent == temp_root
        assert area.is_dir()
        engine.register("a", ref("record"))
        assert engine.execute().status is Status.SUCCESS
    assert not area.exists()


def test_keep_volatile_keeps_the_area_and_records_the_session_end(temp_root: Path) -> None:
    engine = InstallEngine(keep_volatile=True)
    path = engine.log.path
    engine.close()
    assert path.is_file()
    from installengine.eventlog import EventLog

    with EventLog.open(path, readonly=True) as log:
        kinds = [ev.kind for ev in log.query()]
    assert kinds[0] == "session-started"
    assert kinds[-1] == "session-ended"


def test_the_session_is_recorded_first(engine: InstallEngine) -> None:
    first = next(iter(engine.log.query()))
    assert first.kind == "session-started"
    assert first.session == engine.session.id
    assert first.data["pid"] == engine.session.pid
    assert first.data["target"] is None


def test_repr_names_target_state_and_checkpoints(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    assert repr(engine) == "<InstallEngine no target state=idle checkpoints=['a']>"


def test_non_json_cache_values_are_refused_naming_the_path(engine: InstallEngine) -> None:
    with pytest.raises(UsageError, match="at /disk is a PosixPath"):
        engine.cache["disk"] = Path("/dev/sda")
    engine.cache["disks"] = {"list": []}
    with pytest.raises(UsageError, match="at /disks/list/0 is a set"):
        engine.cache["disks"]["list"].append({1})
    assert engine.cache.to_plain() == {"disks": {"list": []}}


def test_volatile_is_never_logged(engine: InstallEngine) -> None:
    engine.volatile["secret"] = "not-in-the-log"
    engine.volatile["obj"] = object()  # anything goes: it is never serialised
    engine.register("a", ref("record"))
    assert engine.execute().status is Status.SUCCESS
    for ev in engine.log.query():
        assert "not-in-the-log" not in repr(ev.data)


def test_application_changes_to_the_cache_are_recorded_at_the_first_point(
        engine: InstallEngine) -> None:
    engine.cache["disks"] = ["sda"]
    engine.cache["disks"].append("sdb")
    engine.register("a", ref("record"))
    engine.execute()
    changes = list(engine.log.query(kind=EventKind.CACHE_CHANGED))
    assert changes[0].checkpoint is None
    assert changes[0].data["by"] == "application"
    assert changes[1].checkpoint == "a"
    assert engine.cache.to_plain() == {"disks": ["sda", "sdb"], "a": True}


# -- exec lists: start_from and pause_before ---------------------------------------------------------


def test_execute_runs_every_checkpoint_in_order(engine: InstallEngine) -> None:
    register_all(engine)
    result = engine.execute()
    assert result.status is Status.SUCCESS
    assert (result.failed, result.errors, result.canceled) == ([], {}, None)
    assert engine.volatile["ran"] == list("abcd")
    assert snapshot_points(engine) == [f"{w} {n}" for n in "abcd" for w in ("before",
                                                                             "completed")]


def test_pause_before_runs_the_earlier_checkpoints_then_execute_continues(
        engine: InstallEngine) -> None:
    register_all(engine)
    assert engine.execute(pause_before="c").status is Status.PAUSED
    assert engine.volatile["ran"] == ["a", "b"]
    assert engine.resumable() == ["a", "b", "c"]
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == list("abcd")


def test_start_from_and_pause_before_run_a_slice(engine: InstallEngine) -> None:
    register_all(engine)
    engine.execute()
    engine.volatile["ran"] = []
    assert engine.execute(start_from="b", pause_before="d").status is Status.PAUSED
    assert engine.volatile["ran"] == ["b", "c"]
    started = list(engine.log.query(kind=EventKind.EXECUTION_STARTED))[-1]
    assert started.data["start_from"] == "b"
    assert started.data["pause_before"] == "d"
    assert started.data["checkpoints"] == ["b", "c"]
    assert isinstance(started.data["continues_from"], int)


def test_pause_before_equal_to_start_from_is_a_usage_error(engine: InstallEngine) -> None:
    register_all(engine)
    engine.execute()
    head = engine.log.head
    with pytest.raises(UsageError, match="pause_before='b' is not after"):
        engine.execute(start_from="b", pause_before="b")
    with pytest.raises(UsageError, match="pause_before='a' is not after"):
        engine.execute(start_from="b", pause_before="a")
    assert engine.log.head == head
    assert engine.state == "completed"


def test_pause_before_the_first_checkpoint_to_run_is_a_usage_error(engine: InstallEngine) -> None:
    register_all(engine)
    with pytest.raises(UsageError, match=r"pause_before='a' is not after the first checkpoint "
                                         r"to run \('a'\)"):
        engine.execute(pause_before="a")
    assert list(engine.log.query(kind=EventKind.EXECUTION_STARTED)) == []


@pytest.mark.parametrize("options", [{"start_from": "nope"}, {"pause_before": "nope"},
                                     {"start_from": "a", "pause_before": "zz"}])
def test_unknown_names_are_usage_errors(engine: InstallEngine, options: dict[str, str]) -> None:
    register_all(engine)
    with pytest.raises(UsageError, match="is not a registered checkpoint; registered: a, b, c, d"):
        engine.execute(**options)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        engine.start(**options)  # type: ignore[arg-type]
    assert engine.state == "idle"
    assert list(engine.log.query(kind=EventKind.EXECUTION_STARTED)) == []


def test_start_from_a_checkpoint_that_is_not_resumable_changes_nothing(
        engine: InstallEngine) -> None:
    register_all(engine)
    engine.cache["keep"] = 1
    head = engine.log.head
    with pytest.raises(NotResumableError, match="cannot resume from 'c': never completed") as info:
        engine.execute(start_from="c")
    assert info.value.checkpoint == "c"
    assert info.value.reason.startswith("never completed")
    assert engine.log.head == head
    assert engine.cache.to_plain() == {"keep": 1}
    assert engine.state == "idle"
    # the failed attempt did not use up an attempt number
    engine.execute()
    (started,) = engine.log.query(kind=EventKind.EXECUTION_STARTED)
    assert started.data["attempt"] == 1


def test_execute_with_everything_completed_runs_nothing_and_succeeds(
        engine: InstallEngine) -> None:
    register_all(engine, "ab")
    engine.execute()
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b"]


def test_execute_with_nothing_registered_succeeds(engine: InstallEngine) -> None:
    assert engine.execute().status is Status.SUCCESS
    assert engine.explain() == []
    assert engine.resumable() == []


# -- explain and resumable -------------------------------------------------------------------------


def test_a_fresh_engine_can_only_start_from_the_first_checkpoint(engine: InstallEngine) -> None:
    register_all(engine, "abc")
    assert engine.resumable() == ["a"]
    verdicts = engine.explain()
    assert verdicts[0] == Verdict("a", True, None)
    assert [v.name for v in verdicts] == ["a", "b", "c"]
    assert all(not v.resumable and v.reason and v.reason.startswith("never completed")
               for v in verdicts[1:])


def test_after_a_run_every_checkpoint_is_resumable(engine: InstallEngine) -> None:
    register_all(engine, "abc")
    engine.execute()
    assert engine.resumable() == ["a", "b", "c"]
    assert all(v.reason is None for v in engine.explain())


def test_a_checkpoint_after_a_failed_one_is_not_resumable(open_engine: Callable[...,
                                                                           InstallEngine]) -> None:
    engine = open_engine(stop_on_error=False)
    engine.register("a", ref("record"))
    engine.register("b", ref("fail"))
    engine.register("c", ref("record"))
    engine.register("d", ref("record"))
    assert engine.execute().status is Status.FAILED
    assert engine.resumable() == ["a", "b"]
    reasons = {v.name: v.reason for v in engine.explain()}
    assert reasons["c"] == "predecessor 'b' failed; resume from 'b' first"
    assert reasons["d"] == reasons["c"]
    with pytest.raises(NotResumableError) as info:
        engine.execute(start_from="c")
    # the reason says where to resume from: no second hint after it
    assert str(info.value) == "cannot resume from 'c': predecessor 'b' failed; resume from 'b' first"


# -- cleanup -----------------------------------------------------------------------------------------


def test_cleanup_before_execution_records_and_changes_nothing_else(engine: InstallEngine) -> None:
    register_all(engine, "ab")
    engine.cleanup()
    (ev,) = engine.log.query(kind=EventKind.CLEANUP)
    assert ev.data == {"removed_files": [], "destroyed_fs_snapshots": []}
    assert engine.resumable() == ["a"]
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b"]


def test_cleanup_after_execution_leaves_only_the_first_checkpoint_resumable(
        engine: InstallEngine) -> None:
    register_all(engine, "abc")
    engine.execute()
    head = engine.log.head[0]
    engine.cleanup()
    assert engine.resumable() == ["a"]
    assert engine.state == "idle"
    # history stays: nothing before the cleanup event was removed
    assert [ev.seq for ev in engine.log.query()][: head] == list(range(1, head + 1))
    with pytest.raises(NotResumableError):
        engine.execute(start_from="b")
    # nothing counts as completed: a plain execute runs everything again, on the cache as is
    engine.volatile["ran"] = []
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b", "c"]
    assert engine.resumable() == ["a", "b", "c"]
    assert engine.log.verify().ok


def test_cleanup_removes_snapshot_files(engine: InstallEngine) -> None:
    engine.register("big", ref("record"), args=["x" * 300_000])
    engine.register("b", ref("record"))
    engine.execute()
    store = engine.log.path.parent / "snapshots"
    assert [p for p in store.iterdir() if p.suffix == ".json"]
    engine.cleanup()
    assert [p for p in store.iterdir() if p.suffix == ".json"] == []
    (ev,) = engine.log.query(kind=EventKind.CLEANUP)
    assert len(ev.data["removed_files"]) >= 1


def test_cleanup_during_execution_is_refused(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    try:
        assert started.wait(WAIT)
        with pytest.raises(EngineStateError) as info:
            engine.cleanup()
        assert info.value.state == "running"
        assert "cancel" in info.value.allowed
        assert "running" in str(info.value)
    finally:
        release.set()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.SUCCESS
    engine.cleanup()
    assert engine.resumable() == ["a"]


# -- dry runs ---------------------------------------------------------------------------------------


def test_dry_run_reaches_the_checkpoint_and_changes_nothing(engine: InstallEngine) -> None:
    register_all(engine, "ab", call="note_dry_run")
    engine.cache["app"] = 1
    result = engine.execute(dry_run=True)
    assert result.status is Status.SUCCESS
    assert engine.volatile["dry_run"] == [True, True]
    assert engine.cache.to_plain() == {"app": 1}
    assert snapshot_points(engine) == []
    started = list(engine.log.query(kind=EventKind.CHECKPOINT_STARTED))
    assert [ev.data["dry_run"] for ev in started] == [True, True]


def test_a_dry_run_does_not_count_as_completed(engine: InstallEngine) -> None:
    register_all(engine, "ab", call="note_dry_run")
    engine.execute(dry_run=True)
    assert engine.resumable() == ["a"]
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["dry_run"] == [True, True, False, False]
    assert engine.cache.to_plain() == {"a": "real", "b": "real"}


def test_a_dry_run_from_a_completed_checkpoint_rolls_nothing_back(engine: InstallEngine) -> None:
    register_all(engine, "ab", call="note_dry_run")
    engine.execute()
    head = engine.log.head[0]
    assert engine.execute(start_from="a", dry_run=True).status is Status.SUCCESS
    assert list(engine.log.query(kind=EventKind.ROLLED_BACK)) == []
    assert snapshot_points(engine) == ["before a", "completed a", "before b", "completed b"]
    assert engine.cache.to_plain() == {"a": "real", "b": "real"}
    assert engine.log.head[0] > head
    assert engine.resumable() == ["a", "b"]
