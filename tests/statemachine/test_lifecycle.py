"""The lifecycle machine: states, transitions as events, refused operations, the diagram."""

from __future__ import annotations

import re
import threading

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import EngineStateError, InstallEngine, Status
from installengine.statemachine.lifecycle import (
    STATES,
    TRANSITIONS,
    allowed_triggers,
    to_mermaid,
)

from tests.statemachine.steps import ref

WAIT = 10.0

#: the event kinds a transition is recorded as
TRANSITION_KINDS = {EventKind.EXECUTION_STARTED, EventKind.PAUSED, EventKind.CANCELED,
                    EventKind.TRANSITION, EventKind.TRANSITION_REFUSED}


def transitions(engine: InstallEngine) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, trigger, source, dest) of every recorded transition, in order."""
    return [(ev.kind, ev.data["trigger"], ev.data.get("source"), ev.data.get("dest"))
            for ev in engine.log.query() if ev.kind in TRANSITION_KINDS]


def test_a_new_engine_is_idle(engine: InstallEngine) -> None:
    assert engine.state == "idle"
    assert transitions(engine) == []


def test_success_goes_idle_running_completed_and_records_both(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    assert engine.execute().status is Status.SUCCESS
    assert engine.state == "completed"
    assert transitions(engine) == [("execution-started", "start", "idle", "running"),
                                   ("transition", "complete", "running", "completed")]


@pytest.mark.parametrize(("call", "status", "state", "kind", "trigger"), [
    ("fail", Status.FAILED, "failed", "transition", "fail"),
    ("BadInit", Status.INIT_FAILED, "failed", "transition", "fail"),
    ("raise_canceled", Status.CANCELED, "canceled", "canceled", "cancel"),
])
def test_each_outcome_ends_in_its_state(engine: InstallEngine, call: str, status: Status,
                                        state: str, kind: str, trigger: str) -> None:
    engine.register("a", ref(call))
    assert engine.execute().status is status
    assert engine.state == state
    assert transitions(engine)[-1] == (kind, trigger, "running", state)


def test_pause_before_ends_paused(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    assert engine.execute(pause_before="b").status is Status.PAUSED
    assert engine.state == "paused"
    assert transitions(engine)[-1] == ("paused", "pause", "running", "paused")


def test_every_transition_of_a_long_session_appends_one_event(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    engine.register("b", ref("fail"))
    engine.register("c", ref("noop"))
    engine.execute(pause_before="b")       # idle -> running -> paused
    engine.execute()                       # paused -> running -> failed
    engine.cleanup()                       # failed -> idle
    engine.execute(pause_before="b")       # idle -> running -> paused
    engine.execute(start_from="a", pause_before="b")  # paused -> running -> paused
    assert transitions(engine) == [
        ("execution-started", "start", "idle", "running"),
        ("paused", "pause", "running", "paused"),
        ("execution-started", "start", "paused", "running"),
        ("transition", "fail", "running", "failed"),
        ("transition", "reset", "failed", "idle"),
        ("execution-started", "start", "idle", "running"),
        ("paused", "pause", "running", "paused"),
        ("execution-started", "start", "paused", "running"),
        ("paused", "pause", "running", "paused"),
    ]
    assert engine.state == "paused"


def test_execution_events_carry_the_attempt_number(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    engine.execute(pause_before="b")
    engine.execute()
    starts = list(engine.log.query(kind=EventKind.EXECUTION_STARTED))
    assert [ev.data["attempt"] for ev in starts] == [1, 2]
    assert [ev.data["checkpoints"] for ev in starts] == [["a"], ["b"]]
    finished = list(engine.log.query(kind=EventKind.EXECUTION_FINISHED))
    assert [(ev.data["attempt"], ev.data["status"]) for ev in finished] == [(1, "PAUSED"),
                                                                            (2, "SUCCESS")]


def test_a_refused_machine_trigger_is_recorded_with_its_error(engine: InstallEngine) -> None:
    # Internal: the public API never asks the machine for a transition it refuses,
    # so drive the model directly to see the finalize hook record the refusal.
    with pytest.raises(EngineStateError, match="cannot finish while the engine is idle; "
                                               "allowed now: start") as info:
        engine._trigger("complete", "finish", data={})
    assert info.value.state == "idle"
    assert info.value.allowed == ["start"]
    (ev,) = engine.log.query(kind=EventKind.TRANSITION_REFUSED)
    assert ev.data["trigger"] == "complete"
    assert ev.data["state"] == "idle"
    assert "Can't trigger event complete from state idle" in ev.data["error"]
    assert engine.state == "idle"


# -- refused operations while running --------------------------------------------------------


@pytest.fixture
def running(engine: InstallEngine):  # type: ignore[no-untyped-def]
    """An engine whose execution is blocked inside checkpoint 'a' until the test releases it."""
    engine.register("a", ref("gated"))
    engine.register("b", ref("noop"))
    engine.volatile["started"] = threading.Event()
    engine.volatile["release"] = release = threading.Event()
    handle = engine.start()
    assert engine.volatile["started"].wait(WAIT)
    yield engine
    release.set()
    assert handle.wait(WAIT) is not None


def test_state_is_running_while_a_checkpoint_runs(running: InstallEngine) -> None:
    assert running.state == "running"


def test_a_second_execute_while_one_runs_is_refused_and_recorded(running: InstallEngine) -> None:
    for attempt in (lambda: running.execute(), lambda: running.start(),
                    lambda: running.execute(start_from="a")):
        with pytest.raises(EngineStateError, match="cannot execute while the engine is "
                                                   "running; allowed now: cancel, pause") as info:
            attempt()
        assert info.value.state == "running"
        assert info.value.allowed == ["cancel", "pause"]
    refused = list(running.log.query(kind=EventKind.TRANSITION_REFUSED))
    assert [(ev.data["trigger"], ev.data["state"]) for ev in refused] == [("start", "running")] * 3
    assert running.state == "running"
    assert len(list(running.log.query(kind=EventKind.EXECUTION_STARTED))) == 1


def test_cleanup_while_running_is_refused_naming_state_and_allowed(
        running: InstallEngine) -> None:
    with pytest.raises(EngineStateError, match="cannot clean up while the engine is running; "
                                               "allowed now: cancel, pause") as info:
        running.cleanup()
    assert (info.value.state, info.value.allowed) == ("running", ["cancel", "pause"])
    (ev,) = running.log.query(kind=EventKind.TRANSITION_REFUSED)
    assert ev.data["trigger"] == "reset"
    assert list(running.log.query(kind=EventKind.CLEANUP)) == []


def test_register_while_running_is_refused_and_recorded(running: InstallEngine) -> None:
    with pytest.raises(EngineStateError, match="cannot register a checkpoint while the engine "
                                               "is running; allowed now: cancel, pause"):
        running.register("late", ref("noop"))
    assert running.checkpoints == ["a", "b"]
    (ev,) = running.log.query(kind=EventKind.TRANSITION_REFUSED)
    assert (ev.data["trigger"], ev.data["state"]) == ("register", "running")
    assert [e.checkpoint for e in running.log.query(kind=EventKind.CHECKPOINT_REGISTERED)] == [
        "a", "b"]


def test_a_closed_engine_refuses_to_execute(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    engine.close()
    with pytest.raises(EngineStateError, match="the engine is closed") as info:
        engine.execute()
    assert info.value.state == "closed"
    engine.close()  # closing twice is harmless


def test_cleanup_returns_a_finished_engine_to_idle(engine: InstallEngine) -> None:
    engine.register("a", ref("noop"))
    engine.cleanup()  # idle: no transition
    assert engine.state == "idle"
    engine.execute()
    engine.cleanup()
    assert engine.state == "idle"
    assert transitions(engine)[-1] == ("transition", "reset", "completed", "idle")


# -- the machine as data and as a diagram ----------------------------------------------------------


def test_the_spec_states_are_all_there() -> None:
    assert {"idle", "running", "paused", "completed", "failed", "canceled"} <= set(STATES)


def test_allowed_triggers_follow_the_transition_table() -> None:
    assert allowed_triggers("running") == ["pause", "complete", "fail", "cancel"]
    assert allowed_triggers("idle") == ["start"]
    assert allowed_triggers("failed") == ["start", "reset"]


def test_mermaid_diagram_has_every_state_and_one_edge_per_transition() -> None:
    text = to_mermaid()
    assert text.lstrip().startswith("---") or "stateDiagram-v2" in text
    edges = set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*:\s*(\w+)\s*$", text, flags=re.M))
    expected = set()
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        for source in sources:
            expected.add((source, t["dest"], t["trigger"]))
    assert edges == expected
    nodes = {name for edge in edges for name in edge[:2]}
    assert nodes == set(STATES)
