"""Progress: 5 % for loading, weights from progress_estimate, scaled reports, never decreasing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from installengine.statemachine import InstallEngine, ProgressEvent, Status
from installengine.statemachine.progress import LOADING_SHARE, ProgressTracker

from tests.statemachine.steps import ref


def collect(engine: InstallEngine) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    engine.progress_listeners.append(events.append)
    return events


def percents(events: list[ProgressEvent]) -> list[float]:
    return [e.percent for e in events]


def assert_never_decreases(events: list[ProgressEvent]) -> None:
    values = percents(events)
    assert values == sorted(values), values
    assert all(0 <= v <= 100 for v in values)


def test_loading_counts_five_percent_then_equal_shares(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    assert engine.execute().status is Status.SUCCESS
    assert events[0] == ProgressEvent(5.0, None, "checkpoints loaded")
    assert [(e.checkpoint, e.message) for e in events[1:]] == [
        ("a", "started"), ("a", "completed"), ("b", "started"), ("b", "completed"),
        (None, "finished")]
    assert percents(events) == pytest.approx([5, 5, 52.5, 52.5, 100, 100])


def test_weights_come_from_progress_estimate(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("short", ref("Weighted"), kwargs={"weight": 1})
    engine.register("long", ref("Weighted"), kwargs={"weight": 3})
    engine.execute()
    done = {e.checkpoint: e.percent for e in events if e.message == "completed"}
    assert done["short"] == pytest.approx(LOADING_SHARE + 95 * 1 / 4)
    assert done["long"] == pytest.approx(100)


@pytest.mark.parametrize("weights", [[0, -5, 2], [0.0, 0.0, 2.0], [-1, -1, 2]])
def test_non_positive_weights_count_as_one(engine: InstallEngine, weights: list[float]) -> None:
    events = collect(engine)
    for i, w in enumerate(weights):
        engine.register(f"c{i}", ref("Weighted"), kwargs={"weight": w})
    engine.execute()
    done = [e.percent for e in events if e.message == "completed"]
    assert done == pytest.approx([5 + 95 / 4, 5 + 95 / 2, 100])


def test_a_checkpoints_reports_are_scaled_into_its_share(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("Weighted"), kwargs={"reports": [0, 25, 50, 100]})
    engine.register("b", ref("Weighted"))
    engine.execute()
    reported = [(e.percent, e.message) for e in events if e.checkpoint == "a"]
    share = 95 / 2
    assert reported == [(5.0, "started"), (5.0, "a 0"), (pytest.approx(5 + share / 4), "a 25"),
                        (pytest.approx(5 + share / 2), "a 50"), (pytest.approx(5 + share), "a 100"),
                        (pytest.approx(5 + share), "completed")]


def test_function_checkpoints_report_through_ctx_progress(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("report_progress"), args=[[10, 90]])
    engine.execute()
    assert [e.message for e in events if e.checkpoint == "a"] == ["started", "at 10", "at 90",
                                                                  "completed"]


def test_progress_never_decreases_whatever_a_checkpoint_reports(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("Weighted"), kwargs={"reports": [50, 20, 80, 150, -10, 60]})
    engine.register("b", ref("report_progress"), args=[[90, "not a number", 10, 100]])
    assert engine.execute().status is Status.SUCCESS
    assert_never_decreases(events)
    a_reports = [e.percent for e in events if e.checkpoint == "a" and e.message.startswith("a ")]
    # 150 is capped at the checkpoint's share; later lower reports keep the high mark
    assert max(a_reports) == pytest.approx(5 + 95 / 2)
    assert events[-1].percent == 100


def test_progress_covers_the_planned_checkpoints_and_ends_below_100_on_failure(
        engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    engine.register("c", ref("fail"))
    assert engine.execute(pause_before="b").status is Status.PAUSED
    # only 'a' was planned: its completion is the whole share, but no "finished" event
    assert percents(events)[-1] == pytest.approx(100)
    assert events[-1].message == "completed"
    events.clear()
    assert engine.execute().status is Status.FAILED
    assert_never_decreases(events)
    assert events[-1].percent < 100
    assert all(e.message != "finished" for e in events)


def test_progress_restarts_for_each_execution(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    engine.execute()
    first = len(events)
    engine.execute(start_from="b")
    second = events[first:]
    assert second[0] == ProgressEvent(5.0, None, "checkpoints loaded")
    assert [e.checkpoint for e in second[1:-1]] == ["b", "b"]
    assert second[-1].percent == 100


def test_a_listener_that_raises_is_logged_and_the_run_goes_on(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("listener bug")

    engine.progress_listeners.append(broken)
    events = collect(engine)
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    assert engine.execute().status is Status.SUCCESS
    assert len(events) == 6
    raised = [r for r in caplog.records if "progress listener" in r.getMessage()]
    assert len(raised) == 6
    assert all(r.exc_info is not None for r in raised)


def test_a_progress_estimate_that_raises_counts_as_one(engine: InstallEngine,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    events = collect(engine)
    engine.register("a", ref("Weighted"), kwargs={"weight": "heavy"})
    engine.register("b", ref("Weighted"), kwargs={"weight": 1})
    assert engine.execute().status is Status.SUCCESS
    assert "progress_estimate() of a raised; using 1" in caplog.text
    done = [e.percent for e in events if e.message == "completed"]
    assert done == pytest.approx([52.5, 100])


def test_init_failed_reports_no_progress(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("BadInit"))
    assert engine.execute().status is Status.INIT_FAILED
    assert events == []


def test_an_execution_with_nothing_to_run_ends_at_100(engine: InstallEngine) -> None:
    events = collect(engine)
    engine.register("a", ref("noop"))
    engine.execute()
    events.clear()
    engine.execute()
    assert percents(events) == [5.0, 100.0]


# -- the tracker on its own ------------------------------------------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[float], list[list[float]]]:
    count = draw(st.integers(min_value=1, max_value=6))
    weights = draw(st.lists(st.floats(min_value=-10, max_value=1e6, allow_nan=False),
                            min_size=count, max_size=count))
    reports = draw(st.lists(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
                                     max_size=5), min_size=count, max_size=count))
    return weights, reports


@given(runs())
def test_the_tracker_never_decreases_and_ends_at_100(
        run: tuple[list[float], list[list[float]]]) -> None:
    weights, reports = run
    names = [f"c{i}" for i in range(len(weights))]
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(names, weights, [events.append])
    tracker.loaded()
    for name, own in zip(names, reports, strict=True):
        tracker.checkpoint_started(name)
        for pct in own:
            tracker.report(name, pct, "")
        tracker.checkpoint_completed(name)
    tracker.finished()
    assert_never_decreases(events)
    assert events[0].percent == LOADING_SHARE
    assert events[-1].percent == 100
