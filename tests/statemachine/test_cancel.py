"""Cancel: during, after and without an execution, and executing again after one."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import ExecutionHandle, InstallEngine, Status

from tests.statemachine.steps import ref

WAIT = 10.0


def completed_points(engine: InstallEngine) -> list[str | None]:
    return [ev.checkpoint for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)
            if ev.data["point"] == "completed"]


def start_blocked(engine: InstallEngine, middle: str, **kwargs: object) -> ExecutionHandle:
    """Register a, <middle> as b, c; start; return once b is running.

    ``volatile['release']`` is there for a gated b; the test sets it.
    """
    engine.register("a", ref("record"))
    engine.register("b", ref(middle), **kwargs)  # type: ignore[arg-type]
    engine.register("c", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    engine.volatile.setdefault("release", threading.Event())
    handle = engine.start()
    assert started.wait(WAIT), "checkpoint b never started"
    return handle


def test_a_checkpoint_honouring_cancel_is_canceled_and_not_completed(
        engine: InstallEngine) -> None:
    handle = start_blocked(engine, "wait_for_cancel")
    engine.cancel()
    # cancel() waits for the execution to stop
    assert handle.done
    result = handle.result
    assert result is not None
    assert result.status is Status.CANCELED
    assert result.canceled == "b"
    assert result.failed == []
    assert result.errors == {}
    assert engine.state == "canceled"
    assert engine.volatile["ran"] == ["a"]
    assert completed_points(engine) == ["a"]
    (ev,) = engine.log.query(kind=EventKind.CHECKPOINT_CANCELED)
    assert ev.checkpoint == "b"
    assert [e.data["trigger"] for e in engine.log.query(kind=EventKind.CANCELED)] == ["cancel"]
    finished = list(engine.log.query(kind=EventKind.EXECUTION_FINISHED))[-1]
    assert finished.data["status"] == "CANCELED"
    assert finished.data["canceled"] == "b"


def test_a_checkpoint_that_returns_after_the_request_is_completed(engine: InstallEngine) -> None:
    handle = start_blocked(engine, "wait_for_cancel", kwargs={"honour": False})
    handle.cancel()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.status is Status.CANCELED
    assert result.canceled is None
    assert result.failed == []
    # b finished its work: it completed; c did not start
    assert engine.volatile["ran"] == ["a", "b"]
    assert completed_points(engine) == ["a", "b"]
    assert engine.cache["b"] == "finished after cancel"
    assert list(engine.log.query(kind=EventKind.CHECKPOINT_CANCELED)) == []
    assert list(engine.log.query(checkpoint="c", kind=EventKind.CHECKPOINT_STARTED)) == []
    assert engine.resumable() == ["a", "b", "c"]


def test_the_last_checkpoint_returning_after_the_request_still_ends_canceled(
        engine: InstallEngine) -> None:
    engine.register("a", ref("wait_for_cancel"), kwargs={"honour": False})
    engine.volatile["started"] = started = threading.Event()
    handle = engine.start()
    assert started.wait(WAIT)
    engine.cancel()
    result = handle.wait(WAIT)
    assert result is not None
    assert (result.status, result.canceled) == (Status.CANCELED, None)
    assert completed_points(engine) == ["a"]


def test_cancel_calls_the_running_checkpoints_cancel_from_the_caller(
        engine: InstallEngine) -> None:
    handle = start_blocked(engine, "CountingCancel")
    engine.cancel()
    result = handle.wait(WAIT)
    assert result is not None
    assert result.canceled == "b"
    assert engine.volatile["cancel_calls"] == [threading.get_ident()]


def test_cancel_from_another_thread_stops_a_blocking_execute(engine: InstallEngine) -> None:
    engine.register("a", ref("wait_for_cancel"))
    engine.register("b", ref("record"))
    engine.volatile["started"] = started = threading.Event()
    errors: list[BaseException] = []

    def canceler() -> None:
        try:
            assert started.wait(WAIT)
            engine.cancel()
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    thread = threading.Thread(target=canceler)
    thread.start()
    result = engine.execute()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert errors == []
    assert (result.status, result.canceled) == (Status.CANCELED, "a")


def test_cancel_with_a_timeout_returns_while_a_checkpoint_ignores_it(
        engine: InstallEngine) -> None:
    handle = start_blocked(engine, "gated")
    release = engine.volatile["release"]
    try:
        engine.cancel(timeout=0.05)
        assert not handle.done
        assert engine.state == "running"
    finally:
        release.set()
    result = handle.wait(WAIT)
    assert result is not None
    assert (result.status, result.canceled) == (Status.CANCELED, None)
    assert engine.volatile["ran"] == ["a", "b"]


def test_cancel_when_idle_is_a_no_op(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    head = engine.log.head
    engine.cancel()
    assert engine.log.head == head
    assert engine.state == "idle"
    assert engine.execute().status is Status.SUCCESS


def test_cancel_after_an_execution_is_a_no_op(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    handle = engine.start()
    result = handle.wait(WAIT)
    assert result is not None
    assert handle.thread is not None
    handle.thread.join(WAIT)
    head = engine.log.head
    handle.cancel()
    engine.cancel()
    assert engine.log.head == head
    assert engine.state == "completed"
    assert handle.result is result
    assert result.status is Status.SUCCESS


def test_an_execution_after_a_cancel_runs_normally(engine: InstallEngine) -> None:
    handle = start_blocked(engine, "cancel_once")
    engine.cancel()
    assert handle.result is not None
    assert handle.result.canceled == "b"
    # a plain execute continues from b with the cache as it is
    result = engine.execute()
    assert result.status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "b", "c"]
    assert engine.cache.to_plain() == {"a": True, "b-partial": True, "b": "done", "c": True}
    assert engine.state == "completed"


def test_resuming_the_canceled_checkpoint_discards_its_partial_changes(
        engine: InstallEngine) -> None:
    start_blocked(engine, "cancel_once")
    engine.cancel()
    assert engine.resumable() == ["a", "b"]
    result = engine.execute(start_from="b")
    assert result.status is Status.SUCCESS
    assert engine.cache.to_plain() == {"a": True, "b": "done", "c": True}
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before b"


def test_a_checkpoint_raising_canceled_by_itself_ends_the_run_canceled(
        engine: InstallEngine) -> None:
    engine.register("a", ref("raise_canceled"))
    engine.register("b", ref("record"))
    result = engine.execute()
    assert (result.status, result.canceled, result.failed) == (Status.CANCELED, "a", [])
    assert engine.volatile["ran"] == ["a"]


def test_cancel_stops_a_run_that_ignores_errors(open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(stop_on_error=False)
    engine.register("f", ref("fail"))
    handle = start_blocked(engine, "wait_for_cancel")
    engine.cancel()
    result = handle.wait(WAIT)
    assert result is not None
    # the failure still shows; cancel stopped the run before c
    assert result.status is Status.CANCELED
    assert result.failed == ["f"]
    assert result.canceled == "b"
    assert "c" not in engine.volatile["ran"]


@pytest.mark.parametrize("honour", [True, False])
def test_close_cancels_a_running_execution(open_engine: Callable[..., InstallEngine],
                                           honour: bool) -> None:
    engine = open_engine()
    handle = start_blocked(engine, "wait_for_cancel", kwargs={"honour": honour})
    engine.close()
    assert handle.done
    assert handle.result is not None
    assert handle.result.status is Status.CANCELED
