"""Attaching the install target: before execution, from inside a checkpoint, onto an existing log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind, EventLog
from installengine.statemachine import (
    InstallEngine,
    NotResumableError,
    Status,
    Target,
    UsageError,
    target_from_spec,
)

from tests.statemachine.steps import ref


def plan(spec: str | None = None) -> list[tuple[str, str, list[Any]]]:
    """a, b, c, d; b attaches ``spec`` when given."""
    b = ("b", "attach", [spec]) if spec else ("b", "append_item", ["b"])
    return [("a", "append_item", ["a"]), b, ("c", "append_item", ["c"]),
            ("d", "append_item", ["d"])]


def register(engine: InstallEngine, checkpoints: list[tuple[str, str, list[Any]]]) -> None:
    for name, call, args in checkpoints:
        engine.register(name, ref(call), args=args)


def points(engine: InstallEngine) -> list[tuple[str, bool, bool]]:
    """(label, durable, has a filesystem snapshot) of every point, in order."""
    return [(f"{ev.data['point']} {ev.checkpoint}", ev.data["durable"],
             ev.data["fs_snapshot"] is not None)
            for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)]


@pytest.fixture
def spec(tmp_path: Path) -> str:
    return f"dir:{tmp_path / 'target'}"


# -- before execution ------------------------------------------------------------------------------


def test_attaching_before_execution_moves_the_log_and_makes_every_point_durable(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan())
    engine.cache["disks"] = ["sda"]
    volatile_log = engine.log.path
    before = [(ev.seq, ev.kind, ev.checkpoint) for ev in engine.log.query()]
    engine.attach_target(spec)
    assert engine.target is not None
    assert engine.target.spec == spec
    assert engine.log.path == engine.target.state_dir / "log.db"
    assert engine.log.path != volatile_log
    # everything recorded so far is in the durable log, in order
    copied = [(ev.seq, ev.kind, ev.checkpoint) for ev in engine.log.query()][: len(before)]
    assert copied == before
    attached = list(engine.log.query(kind=EventKind.TARGET_ATTACHED))[-1]
    assert attached.data["spec"] == spec
    assert attached.data["from_log"] == str(volatile_log)
    assert attached.data["copied_events"] == len(before)
    assert engine.execute().status is Status.SUCCESS
    assert all(durable and fs for _, durable, fs in points(engine))
    assert engine.log.verify().ok


def test_after_attaching_before_execution_everything_is_resumable_after_restart(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan())
    engine.cache["disks"] = ["sda"]
    engine.attach_target(spec)
    engine.execute()
    expected = engine.cache.to_plain()
    engine.close()
    again = open_engine(spec)
    register(again, plan())
    assert again.resumable() == ["a", "b", "c", "d"]
    assert again.execute(start_from="a").status is Status.SUCCESS
    assert again.cache.to_plain() == expected


def test_the_volatile_area_is_removed_at_close_after_attaching(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    area = engine.log.path.parent
    engine.attach_target(spec)
    assert area.is_dir()
    engine.close()
    assert not area.exists()
    assert (Path(spec[4:]) / ".installengine" / "log.db").is_file()


def test_attaching_the_same_target_again_is_a_no_op(spec: str,
                                                    open_engine: Callable[...,
                                                                          InstallEngine]) -> None:
    engine = open_engine()
    engine.attach_target(spec)
    head = engine.log.head
    engine.attach_target(spec)
    assert engine.log.head == head


def test_attaching_a_second_target_is_refused(spec: str, tmp_path: Path,
                                              open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(spec)
    with pytest.raises(UsageError, match="is already attached"):
        engine.attach_target(f"dir:{tmp_path / 'other'}")
    assert engine.target is not None
    assert engine.target.spec == spec


def test_a_target_object_attaches_like_a_spec_string(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan())
    engine.attach_target(target_from_spec(spec))
    assert isinstance(engine.target, Target)
    assert engine.execute().status is Status.SUCCESS


# -- from inside a checkpoint --------------------------------------------------------------------


def test_a_checkpoint_can_attach_the_target_and_later_points_are_durable(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan(spec))
    assert engine.execute().status is Status.SUCCESS
    assert points(engine) == [
        ("before a", False, False), ("completed a", False, False), ("before b", False, False),
        ("completed b", True, True), ("before c", True, True), ("completed c", True, True),
        ("before d", True, True), ("completed d", True, True)]
    # the checkpoint sees the target it attached
    attached = engine.volatile["attached_target"]
    assert isinstance(attached, Target)
    assert attached.spec == spec
    # in this session every point is still usable
    assert engine.resumable() == ["a", "b", "c", "d"]
    assert engine.log.verify().ok


def test_points_from_before_the_attach_are_not_resumable_after_restart(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan(spec))
    engine.execute()
    expected = engine.cache.to_plain()
    engine.close()

    again = open_engine(spec)
    register(again, plan(spec))
    verdicts = {v.name: v for v in again.explain()}
    assert verdicts["a"].resumable  # the first checkpoint always is: a fresh attempt
    assert not verdicts["b"].resumable
    assert verdicts["b"].reason is not None
    assert verdicts["b"].reason.startswith("snapshot only volatile")
    assert again.resumable() == ["a", "c", "d"]
    # c's before-state was durable when taken: it rebuilds from the copied history
    assert again.execute(start_from="c").status is Status.SUCCESS
    assert again.cache.to_plain() == expected


def test_a_resume_refused_for_a_volatile_point_changes_nothing(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine()
    register(engine, plan(spec))
    engine.execute()
    engine.close()
    again = open_engine(spec)
    register(again, plan(spec))
    head = again.log.head
    with pytest.raises(NotResumableError, match="snapshot only volatile"):
        again.execute(start_from="b")
    assert again.log.head == head


# -- onto a target that already has a log -------------------------------------------------------------


def test_attaching_to_a_target_with_a_previous_sessions_log(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    first = open_engine(spec)
    register(first, plan())
    first.execute()
    first_session = first.session.id
    first.close()
    durable_log = Path(spec[4:]) / ".installengine" / "log.db"
    with EventLog.open(durable_log, readonly=True) as log:
        previous = [(ev.seq, ev.hash) for ev in log.query()]

    second = open_engine()
    register(second, plan())
    second.execute(pause_before="c")
    mine = [(ev.kind, ev.checkpoint) for ev in second.log.query()]
    second.attach_target(spec)
    assert second.log.path == durable_log
    events = list(second.log.query())
    # the earlier history is untouched, and this session's events follow it, remapped
    assert [(ev.seq, ev.hash) for ev in events[: len(previous)]] == previous
    appended = events[len(previous): len(previous) + len(mine)]
    assert [(ev.kind, ev.checkpoint) for ev in appended] == mine
    assert all("copied_from_seq" in ev.data for ev in appended)
    attached = events[len(previous) + len(mine)]
    assert attached.kind == "target-attached"
    assert attached.data["copied_events"] == len(mine)
    assert second.log.verify().ok
    sessions = [ev.session for ev in second.log.query(kind=EventKind.SESSION_STARTED)]
    assert sessions == [first_session, second.session.id]

    # this session goes on from where it paused, now durably
    assert second.resumable() == ["a", "b", "c"]
    assert second.execute().status is Status.SUCCESS
    assert second.cache["items"] == ["a", "b", "c", "d"]
    expected = second.cache.to_plain()
    second.close()

    third = open_engine(spec)
    register(third, plan())
    assert third.resumable() == ["a", "c", "d"]
    assert third.execute(start_from="d").status is Status.SUCCESS
    assert third.cache.to_plain() == expected
    assert third.log.verify().ok


def test_attaching_to_an_existing_log_before_any_execution(
        spec: str, open_engine: Callable[..., InstallEngine]) -> None:
    first = open_engine(spec)
    register(first, plan())
    first.execute(pause_before="c")
    first.close()

    second = open_engine()
    register(second, plan())
    second.attach_target(spec)
    # nothing counts as completed in the new session's view; the earlier points are durable
    assert second.resumable() == ["a", "b", "c"]
    assert second.execute(start_from="c").status is Status.SUCCESS
    assert second.cache["items"] == ["a", "b", "c", "d"]
