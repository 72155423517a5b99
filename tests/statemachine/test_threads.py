"""Steering an engine from other threads, over and over: no deadlock, no lost or stray signal.

Every wait is bounded. Threads meet at threading.Event and Barrier objects,
never by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import (
    EngineStateError,
    InstallEngine,
    ProgressEvent,
    Result,
    Status,
)

from tests.statemachine.steps import ref

WAIT = 10.0
ROUNDS = 15


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"


def test_cancel_from_another_thread_in_repeated_runs(engine: InstallEngine) -> None:
    engine.register("a", ref("wait_for_cancel"))
    engine.register("b", ref("record"))
    for _ in range(ROUNDS):
        engine.volatile["started"] = started = threading.Event()
        handle = engine.start()
        canceler = threading.Thread(target=lambda s=started: s.wait(WAIT) and engine.cancel())
        canceler.start()
        result = handle.wait(WAIT)
        join_all([canceler])
        assert result is not None
        assert (result.status, result.canceled) == (Status.CANCELED, "a")
        assert engine.state == "canceled"
    assert len(list(engine.log.query(kind=EventKind.CHECKPOINT_CANCELED))) == ROUNDS
    assert engine.log.verify().ok


def test_many_threads_cancelling_at_once(engine: InstallEngine) -> None:
    engine.register("a", ref("CountingCancel"))
    engine.register("b", ref("record"))
    for _ in range(5):
        engine.volatile["started"] = started = threading.Event()
        engine.volatile["cancel_calls"] = []
        handle = engine.start()
        assert started.wait(WAIT)
        barrier = threading.Barrier(4, timeout=WAIT)
        returned: list[str] = []

        def cancel(b: threading.Barrier = barrier, out: list[str] = returned) -> None:
            b.wait()
            engine.cancel()
            out.append(engine.state)

        threads = [threading.Thread(target=cancel) for _ in range(4)]
        for t in threads:
            t.start()
        join_all(threads)
        # every cancel() returned after the execution had ended (a late one found it
        # ended already: a no-op), so the handle has the result or is about to
        assert returned == ["canceled"] * 4
        result = handle.wait(WAIT)
        assert result is not None
        assert (result.status, result.canceled) == (Status.CANCELED, "a")
        assert 1 <= len(engine.volatile["cancel_calls"]) <= 4


def test_cancel_at_any_moment_of_a_run_leaves_a_consistent_engine(engine: InstallEngine) -> None:
    names = [f"c{i}" for i in range(8)]
    for name in names:
        engine.register(name, ref("record"))
    outcomes = set()
    for round_ in range(ROUNDS):
        engine.cleanup()
        trigger_at = round_ % (len(names) * 2 + 3)
        reached = threading.Event()
        seen: list[ProgressEvent] = []

        def listener(event: ProgressEvent, seen: list[ProgressEvent] = seen,
                     reached: threading.Event = reached, at: int = trigger_at) -> None:
            seen.append(event)
            if len(seen) == at:
                reached.set()

        engine.progress_listeners[:] = [listener]
        handle = engine.start()
        canceler = threading.Thread(target=lambda r=reached: r.wait(WAIT) and engine.cancel())
        canceler.start()
        result = handle.wait(WAIT)
        reached.set()  # the run may end before the trigger: let the canceler go
        join_all([canceler])
        assert result is not None
        assert result.status in (Status.CANCELED, Status.SUCCESS)
        outcomes.add(result.status)
        done = [ev.checkpoint for ev in engine.log.query(kind=EventKind.CHECKPOINT_COMPLETED)
                if ev.seq > _last_cleanup(engine)]
        # completions are a prefix of the plan, and no checkpoint ran after a cancel
        assert done == names[: len(done)]
        if result.status is Status.SUCCESS:
            assert done == names
        assert engine.state == result.status.value.replace("success", "completed")
    assert Status.CANCELED in outcomes
    assert engine.log.verify().ok


def _last_cleanup(engine: InstallEngine) -> int:
    last = next(iter(engine.log.query(kind=EventKind.CLEANUP, newest_first=True, limit=1)), None)
    return last.seq if last else 0


def test_progress_listeners_run_in_the_execution_thread(engine: InstallEngine) -> None:
    engine.register("a", ref("Weighted"), kwargs={"reports": [10, 50, 90]})
    engine.register("b", ref("record"))
    for _ in range(ROUNDS):
        seen: list[int] = []
        engine.progress_listeners[:] = [lambda e, seen=seen: seen.append(threading.get_ident())]
        handle = engine.start(start_from="a") if engine.resumable() != ["a"] else engine.start()
        assert handle.wait(WAIT) is not None
        assert handle.thread is not None
        assert set(seen) == {handle.thread.ident}
        assert len(seen) == 9


def test_listeners_added_and_removed_from_another_thread_during_runs(
        engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    engine.register("b", ref("Weighted"), kwargs={"reports": [25, 50, 75]})
    late: list[ProgressEvent] = []
    for round_ in range(ROUNDS):
        engine.volatile["started"] = started = threading.Event()
        engine.volatile["release"] = release = threading.Event()
        handle = engine.start(start_from="a") if round_ else engine.start()

        def fiddle(s: threading.Event = started, r: threading.Event = release) -> None:
            assert s.wait(WAIT)
            engine.progress_listeners.append(late.append)
            r.set()

        fiddler = threading.Thread(target=fiddle)
        fiddler.start()
        result = handle.wait(WAIT)
        join_all([fiddler])
        assert result is not None
        assert result.status is Status.SUCCESS
        engine.progress_listeners.remove(late.append)
        values = [e.percent for e in late]
        assert values == sorted(values) or values[-1] == 100
    assert late
    assert all(0 <= e.percent <= 100 for e in late)


def test_a_listener_that_cancels_does_not_deadlock(engine: InstallEngine) -> None:
    for name in "abc":
        engine.register(name, ref("record"))

    def cancel_when_b_starts(event: ProgressEvent) -> None:
        if event.checkpoint == "b" and event.message == "started":
            engine.cancel()  # from the execution thread itself

    engine.progress_listeners.append(cancel_when_b_starts)
    for round_ in range(5):
        handle = engine.start(start_from="a") if round_ else engine.start()
        result = handle.wait(WAIT)
        assert result is not None
        # b was already running when the listener canceled; it returned normally
        assert (result.status, result.canceled) == (Status.CANCELED, None)
        assert engine.volatile["ran"][-2:] == ["a", "b"]


def test_a_listener_that_pauses_stops_after_the_running_checkpoint(
        engine: InstallEngine) -> None:
    for name in "abc":
        engine.register(name, ref("record"))

    def pause_in_a(event: ProgressEvent) -> None:
        if event.checkpoint == "a" and event.message == "started":
            engine.pause()

    engine.progress_listeners.append(pause_in_a)
    for round_ in range(5):
        result = engine.execute(start_from="a") if round_ else engine.execute()
        assert result.status is Status.PAUSED
        assert engine.state == "paused"
    engine.progress_listeners.clear()
    assert engine.execute().status is Status.SUCCESS


def test_only_one_of_many_concurrent_executes_runs(engine: InstallEngine) -> None:
    engine.register("a", ref("gated"))
    for round_ in range(5):
        engine.volatile["started"] = started = threading.Event()
        engine.volatile["release"] = release = threading.Event()
        barrier = threading.Barrier(4, timeout=WAIT)
        refusals = threading.Semaphore(0)
        results: list[Result] = []
        errors: list[EngineStateError] = []

        def attempt(b: threading.Barrier = barrier, first: bool = round_ == 0,
                    refusals: threading.Semaphore = refusals, results: list[Result] = results,
                    errors: list[EngineStateError] = errors) -> None:
            b.wait()
            try:
                results.append(engine.execute() if first else engine.execute(start_from="a"))
            except EngineStateError as err:
                errors.append(err)
                refusals.release()

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            assert started.wait(WAIT)
            # the losers are refused while the winner is blocked in checkpoint a
            for _ in range(3):
                assert refusals.acquire(timeout=WAIT)
        finally:
            release.set()
        join_all(threads)
        assert [r.status for r in results] == [Status.SUCCESS]
        assert len(errors) == 3
        assert all(e.state == "running" for e in errors)
    refused = list(engine.log.query(kind=EventKind.TRANSITION_REFUSED))
    assert len(refused) == 15


def test_an_execution_can_start_as_soon_as_the_handle_reports_the_end(
        engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    release = threading.Event()
    for round_ in range(ROUNDS):
        release.clear()
        # on_finish holds the execution thread after the handle reported the end
        handle = engine.start(start_from="a" if round_ else None,
                              on_finish=lambda r: release.wait(WAIT))
        result = handle.wait(WAIT)
        assert result is not None
        assert engine.state == "completed"
        try:
            assert engine.execute(start_from="a").status is Status.SUCCESS
        finally:
            release.set()
        assert handle.thread is not None
        handle.thread.join(WAIT)
        assert not handle.thread.is_alive()


def test_on_finish_can_start_the_next_execution(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    engine.register("b", ref("record"))
    second: list[Result] = []
    finished = threading.Event()

    def chain(result: Result) -> None:
        if result.status is Status.PAUSED:
            second.append(engine.execute())
        finished.set()

    engine.start(pause_before="b", on_finish=chain)
    assert finished.wait(WAIT)
    assert [r.status for r in second] == [Status.SUCCESS]
    assert engine.volatile["ran"] == ["a", "b"]


@pytest.mark.parametrize("steer", ["cancel", "pause"])
def test_steering_an_idle_engine_from_many_threads_is_harmless(
        engine: InstallEngine, steer: str) -> None:
    engine.register("a", ref("record"))
    head = engine.log.head
    barrier = threading.Barrier(6, timeout=WAIT)
    action: Callable[[], None] = getattr(engine, steer)

    def go() -> None:
        barrier.wait()
        action()

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    join_all(threads)
    assert engine.log.head == head
    assert engine.execute().status is Status.SUCCESS
