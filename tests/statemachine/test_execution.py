"""Running checkpoints: blocking and non-blocking, failures, stop_on_error, INIT_FAILED, pause."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import ErrorInfo, InstallEngine, Result, Status

from tests.statemachine.steps import ref

WAIT = 10.0


def completed_points(engine: InstallEngine) -> list[str | None]:
    return [ev.checkpoint for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)
            if ev.data["point"] == "completed"]


def kinds_for(engine: InstallEngine, checkpoint: str) -> list[str]:
    return [ev.kind for ev in engine.log.query(checkpoint=checkpoint)
            if ev.kind != EventKind.CHECKPOINT_REGISTERED]


# -- blocking and non-blocking runs ----------------------------------------------------------------


def test_a_blocking_run_returns_its_result(engine: InstallEngine) -> None:
    engine.register("a", ref("record"), args=[1])
    engine.register("b", ref("Record"), args=[2])
    result = engine.execute()
    assert result == Result(Status.SUCCESS)
    assert engine.cache.to_plain() == {"a": 1, "b": 2}
    assert kinds_for(engine, "a") == ["snapshot-taken", "checkpoint-started", "cache-changed",
                                      "snapshot-taken", "checkpoint-completed"]


def test_a_non_blocking_run_has_no_result_until_it_ends(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.register("b", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    finished: list[tuple[Result, int]] = []
    handle = engine.start(on_finish=lambda r: finished.append((r, threading.get_ident())))
    try:
        assert started.wait(WAIT)
        assert handle.result is None
        assert not handle.done
        assert handle.wait(timeout=0.01) is None
        assert finished == []
    finally:
        release.set()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.SUCCESS
    assert handle.done
    assert handle.result is result
    assert handle.thread is not None
    handle.thread.join(WAIT)
    assert not handle.thread.is_alive()
    assert len(finished) == 1
    assert finished[0][0] is result
    assert finished[0][1] == handle.thread.ident != threading.get_ident()
    assert engine.volatile["ran"] == ["a", "b"]
    assert engine.state == "completed"


def test_on_finish_is_called_once_for_a_failure_too(engine: InstallEngine) -> None:
    engine.register("a", ref("fail"))
    calls: list[Result] = []
    handle = engine.start(on_finish=calls.append)
    result = handle.wait(WAIT)
    assert result is not None
    assert handle.thread is not None
    handle.thread.join(WAIT)
    assert calls == [result]
    assert result.status is Status.FAILED


def test_an_on_finish_that_raises_is_logged_and_the_result_stands(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture) -> None:
    engine.register("a", ref("record"))

    def broken(result: Result) -> None:
        raise RuntimeError("listener bug")

    handle = engine.start(on_finish=broken)
    assert handle.thread is not None
    handle.thread.join(WAIT)
    assert handle.result is not None
    assert handle.result.status is Status.SUCCESS
    assert "on_finish callback raised" in caplog.text
    assert engine.state == "completed"


def test_a_non_blocking_run_can_be_followed_by_another(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    engine.register("b", ref("record"))
    first = engine.start(pause_before="b")
    assert first.thread is not None
    first.thread.join(WAIT)
    assert first.result is not None
    assert first.result.status is Status.PAUSED
    second = engine.start()
    assert second.thread is not None
    second.thread.join(WAIT)
    assert second.result is not None
    assert second.result.status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b"]


# -- failures ---------------------------------------------------------------------------------------


def register_abc(engine: InstallEngine, failing: str, call: str = "fail") -> None:
    for name in "abc":
        engine.register(name, ref(call if name == failing else "record"))


@pytest.mark.parametrize("failing", ["a", "b", "c"])
def test_a_failure_stops_the_run_by_default(engine: InstallEngine, failing: str) -> None:
    register_abc(engine, failing)
    result = engine.execute()
    assert result.status is Status.FAILED
    assert result.failed == [failing]
    assert set(result.errors) == {failing}
    info = result.errors[failing]
    assert isinstance(info, ErrorInfo)
    assert info.type == "ValueError"
    assert info.message == "boom"
    assert "Traceback" in info.traceback
    assert "ValueError: boom" in info.traceback
    ran = "abc"[: "abc".index(failing) + 1]
    assert engine.volatile["ran"] == list(ran)
    assert completed_points(engine) == list(ran[:-1])
    assert engine.state == "failed"
    (ev,) = engine.log.query(kind=EventKind.CHECKPOINT_FAILED)
    assert ev.checkpoint == failing
    assert ev.data["type"] == "ValueError"
    assert "ValueError: boom" in ev.data["traceback"]
    finished = list(engine.log.query(kind=EventKind.EXECUTION_FINISHED))[-1]
    assert finished.data["status"] == "FAILED"
    assert finished.data["failed"] == [failing]


@pytest.mark.parametrize("failing", ["a", "b", "c"])
def test_without_stop_on_error_the_rest_still_runs(open_engine: Callable[..., InstallEngine],
                                                   failing: str) -> None:
    engine = open_engine(stop_on_error=False)
    register_abc(engine, failing, call="disk_fail")
    result = engine.execute()
    assert result.status is Status.FAILED
    assert result.failed == [failing]
    assert result.errors[failing].type == "tests.statemachine.steps.DiskError"
    assert engine.volatile["ran"] == list("abc")
    assert completed_points(engine) == [n for n in "abc" if n != failing]
    assert engine.state == "failed"


def test_several_failures_are_listed_in_order(open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(stop_on_error=False)
    engine.register("a", ref("disk_fail"))
    engine.register("b", ref("record"))
    engine.register("c", ref("fail"), kwargs={"message": "second"})
    result = engine.execute()
    assert result.failed == ["a", "c"]
    assert {k: (v.type, v.message) for k, v in result.errors.items()} == {
        "a": ("tests.statemachine.steps.DiskError", "a: disk on fire"),
        "c": ("ValueError", "second")}
    assert result.canceled is None


def test_a_failed_checkpoint_is_retried_by_a_plain_execute(engine: InstallEngine) -> None:
    register_abc(engine, "b")
    engine.execute()
    # a completed: the retry continues from b, with b's partial change kept as is
    result = engine.execute()
    assert result.status is Status.FAILED
    assert engine.volatile["ran"] == ["a", "b", "b"]
    assert engine.cache.to_plain() == {"a": True, "b-partial": True}


def test_the_result_serialises_with_status_names(engine: InstallEngine) -> None:
    register_abc(engine, "b")
    data = engine.execute().as_json()
    assert data["status"] == "FAILED"
    assert data["failed"] == ["b"]
    assert data["canceled"] is None
    assert data["errors"]["b"]["type"] == "ValueError"  # type: ignore[index]


# -- INIT_FAILED -----------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 2])
def test_a_constructor_that_raises_fails_the_run_before_anything_runs(
        engine: InstallEngine, position: int) -> None:
    names = ["a", "b", "c"]
    for i, name in enumerate(names):
        engine.register(name, ref("BadInit" if i == position else "record"))
    result = engine.execute()
    assert result.status is Status.INIT_FAILED
    bad = names[position]
    assert result.failed == [bad]
    assert result.errors[bad].type == "RuntimeError"
    assert result.errors[bad].message == f"cannot build {bad}"
    assert "ran" not in engine.volatile
    assert list(engine.log.query(kind=EventKind.CHECKPOINT_STARTED)) == []
    assert list(engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)) == []
    (ev,) = engine.log.query(kind=EventKind.CHECKPOINT_FAILED)
    assert ev.data["phase"] == "init"
    assert engine.state == "failed"
    assert engine.resumable() == ["a"]


def test_init_failed_is_reported_by_the_handle_too(engine: InstallEngine) -> None:
    engine.register("a", ref("BadInit"))
    handle = engine.start()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.INIT_FAILED


# -- pause from another thread --------------------------------------------------------------------


def test_pause_stops_after_the_running_checkpoint_and_resume_continues(
        engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    engine.register("b", ref("gated"))
    engine.register("c", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    try:
        assert started.wait(WAIT)
        engine.pause()
    finally:
        release.set()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.PAUSED
    assert engine.state == "paused"
    assert engine.volatile["ran"] == ["a", "b"]
    assert completed_points(engine) == ["a", "b"]
    assert engine.resumable() == ["a", "b", "c"]
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b", "c"]


def test_handle_pause_does_the_same(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.register("b", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    try:
        assert started.wait(WAIT)
        handle.pause()
    finally:
        release.set()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.PAUSED
    assert engine.volatile["ran"] == ["a"]


def test_pause_in_the_last_checkpoint_is_a_success(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    try:
        assert started.wait(WAIT)
        engine.pause()
    finally:
        release.set()
    result = handle.wait(WAIT)
    # every requested checkpoint ran: nothing was left to pause before
    assert result is not None
    assert result.status is Status.SUCCESS


def test_a_pause_request_does_not_leak_into_the_next_run(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.register("b", ref("record"))
    engine.register("c", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    try:
        assert started.wait(WAIT)
        engine.pause()
    finally:
        release.set()
    assert handle.wait(WAIT) is not None
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b", "c"]


def test_pause_when_idle_is_a_no_op(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    head = engine.log.head
    engine.pause()
    assert engine.log.head == head
    assert engine.execute().status is Status.SUCCESS


def test_a_checkpoint_logger_uses_the_registered_level(engine: InstallEngine) -> None:
    engine.register("quiet", ref("noop"), loglevel="ERROR")
    engine.execute()
    assert logging.getLogger("installengine.checkpoint.quiet").getEffectiveLevel() == logging.ERROR
