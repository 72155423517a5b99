"""Resuming within one process: execute(start_from=X) rolls the cache (and target) back to before X."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind, EventLog, LogWriteError
from installengine.statemachine import InstallEngine, NotResumableError, Status

from tests.statemachine.steps import ref


def register_items(engine: InstallEngine, names: str = "abcd") -> None:
    for name in names:
        engine.register(name, ref("append_item"), args=[name])


def test_start_from_a_completed_checkpoint_restores_its_before_state(
        engine: InstallEngine) -> None:
    register_items(engine)
    engine.execute()
    assert engine.cache["items"] == ["a", "b", "c", "d"]
    assert engine.execute(start_from="c").status is Status.SUCCESS
    # c and d ran again on the state before c, not on top of their own changes
    assert engine.cache["items"] == ["a", "b", "c", "d"]
    assert engine.volatile["ran"] == ["a", "b", "c", "d", "c", "d"]
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.checkpoint == "c"
    assert rolled.data["point"] == "before c"
    assert rolled.data["abandoned"] == ["c", "d"]
    started = list(engine.log.query(kind=EventKind.EXECUTION_STARTED))[-1]
    assert started.data["continues_from"] == rolled.data["to"]
    assert engine.log.verify().ok


def test_start_from_the_first_checkpoint_restores_the_applications_cache(
        engine: InstallEngine) -> None:
    engine.cache["disks"] = ["sda"]
    register_items(engine, "ab")
    engine.execute()
    engine.cache["disks"].append("changed later")
    engine.execute(start_from="a", pause_before="b")
    assert engine.cache.to_plain() == {"disks": ["sda"], "items": ["a"]}


def test_rolling_back_abandons_later_completions(engine: InstallEngine) -> None:
    register_items(engine)
    engine.execute()
    assert engine.execute(start_from="b", pause_before="c").status is Status.PAUSED
    assert engine.cache["items"] == ["a", "b"]
    assert engine.resumable() == ["a", "b", "c"]
    reasons = {v.name: v.reason for v in engine.explain()}
    assert reasons["d"] is not None
    assert "never completed" in reasons["d"]
    with pytest.raises(NotResumableError):
        engine.execute(start_from="d")
    # a plain execute continues from c, the first checkpoint not completed in this lineage
    engine.volatile["ran"] = []
    engine.execute()
    assert engine.volatile["ran"] == ["c", "d"]
    assert engine.cache["items"] == ["a", "b", "c", "d"]


def test_rolling_back_twice_to_the_same_point(engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute()
    for _ in range(3):
        assert engine.execute(start_from="b").status is Status.SUCCESS
        assert engine.cache["items"] == ["a", "b", "c"]
    assert len(list(engine.log.query(kind=EventKind.ROLLED_BACK))) == 3
    assert engine.log.verify().ok


def test_rolling_back_to_an_earlier_then_a_later_point(engine: InstallEngine) -> None:
    register_items(engine)
    engine.execute()
    engine.execute(start_from="a", pause_before="c")
    assert engine.cache["items"] == ["a", "b"]
    # the before-b of the new lineage is the one to go back to
    engine.execute(start_from="b")
    assert engine.cache["items"] == ["a", "b", "c", "d"]


def test_changes_made_while_paused_are_kept_by_a_continuation(engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute(pause_before="b")
    engine.cache["answer"] = 42
    assert engine.execute(start_from="b").status is Status.SUCCESS
    assert list(engine.log.query(kind=EventKind.ROLLED_BACK)) == []
    assert engine.cache["answer"] == 42
    started = list(engine.log.query(kind=EventKind.EXECUTION_STARTED))[-1]
    assert started.data["continues_from"] == "continuation"


def test_changes_made_while_paused_are_kept_by_a_plain_execute(engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute(pause_before="b")
    engine.cache["answer"] = 42
    engine.execute()
    assert engine.cache["answer"] == 42
    assert engine.cache["items"] == ["a", "b", "c"]


def test_resuming_an_earlier_checkpoint_while_paused_discards_the_pause_changes(
        engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute(pause_before="c")
    engine.cache["answer"] = 42
    engine.execute(start_from="b")
    assert "answer" not in engine.cache
    assert engine.cache["items"] == ["a", "b", "c"]


def test_a_failed_checkpoint_retried_with_start_from_loses_its_partial_changes(
        open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(stop_on_error=False)
    engine.register("a", ref("append_item"), args=["a"])
    engine.register("b", ref("append_then_fail"), args=["b"])
    engine.register("c", ref("append_item"), args=["c"])
    assert engine.execute().status is Status.FAILED
    assert engine.cache["items"] == ["a", "b", "c"]
    assert engine.resumable() == ["a", "b"]
    assert engine.execute(start_from="b", pause_before="c").status is Status.FAILED
    # rolled back to before b: b's partial change and c's completed work are gone
    assert engine.cache["items"] == ["a", "b"]
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before b"
    assert rolled.data["abandoned"] == ["c"]


def test_a_failed_checkpoint_retried_with_a_plain_execute_continues_as_is(
        engine: InstallEngine) -> None:
    engine.register("a", ref("append_item"), args=["a"])
    engine.register("b", ref("append_then_fail"), args=["b"])
    engine.execute()
    engine.execute()
    assert engine.cache["items"] == ["a", "b", "b"]
    assert list(engine.log.query(kind=EventKind.ROLLED_BACK)) == []


def test_a_failed_first_checkpoint_retried_with_start_from_rolls_back_to_before_it(
        engine: InstallEngine) -> None:
    engine.cache["app"] = 1
    engine.register("a", ref("append_then_fail"), args=["a"])
    engine.execute()
    assert engine.cache.to_plain() == {"app": 1, "items": ["a"]}
    engine.execute(start_from="a")
    assert engine.cache.to_plain() == {"app": 1, "items": ["a"]}
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before a"


def test_the_volatile_cache_is_not_rolled_back(engine: InstallEngine) -> None:
    register_items(engine, "ab")
    engine.execute()
    engine.volatile["kept"] = ["anything"]
    engine.execute(start_from="a")
    assert engine.volatile["kept"] == ["anything"]
    assert engine.volatile["ran"] == ["a", "b", "a", "b"]


def test_a_refused_resume_changes_nothing(engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute(pause_before="b")
    engine.cache["answer"] = 42
    head = engine.log.head
    with pytest.raises(NotResumableError) as info:
        engine.execute(start_from="c")
    assert info.value.checkpoint == "c"
    assert "resume from 'b'" in str(info.value)
    assert engine.log.head == head
    assert engine.cache.to_plain() == {"items": ["a"], "answer": 42}
    assert engine.state == "paused"


def test_a_rollback_verifies_what_it_restores(engine: InstallEngine) -> None:
    register_items(engine, "abc")
    engine.execute()
    points = list(engine.log.query(kind=EventKind.SNAPSHOT_TAKEN))
    before_b = next(p for p in points if p.checkpoint == "b" and p.data["point"] == "before")
    engine.execute(start_from="b", pause_before="c")
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["to"] == before_b.seq
    assert rolled.data["digest"] == before_b.data["digest"]


# -- with a directory target: the filesystem rolls back too ---------------------------------------


def register_files(engine: InstallEngine, names: str = "abc") -> None:
    for name in names:
        engine.register(name, ref("write_file"), args=[f"{name}.txt", f"from {name}"])


def files_in(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if ".installengine" not in p.parts}


def test_start_from_rolls_a_directory_target_back(tmp_path: Path,
                                                  open_engine: Callable[..., InstallEngine]) -> None:
    root = tmp_path / "target"
    engine = open_engine(f"dir:{root}")
    register_files(engine)
    engine.execute()
    assert files_in(root) == {"a.txt", "b.txt", "c.txt"}
    (root / "stray.txt").write_text("made after c")
    assert engine.execute(start_from="b", pause_before="c").status is Status.PAUSED
    assert files_in(root) == {"a.txt", "b.txt"}
    assert engine.cache.to_plain() == {"a": "a.txt", "b": "b.txt"}
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["destroyed_fs_snapshots"]
    assert engine.log.verify().ok


def test_a_failed_checkpoint_on_a_directory_target_is_rolled_back_on_retry(
        tmp_path: Path, open_engine: Callable[..., InstallEngine]) -> None:
    root = tmp_path / "target"
    engine = open_engine(f"dir:{root}")
    register_files(engine, "a")
    engine.register("b", ref("fail"))
    engine.execute()
    (root / "b-left-this.txt").write_text("partial")
    engine.execute(start_from="b")
    assert files_in(root) == {"a.txt"}


class _FakeFullLog:
    """A fake: the log's disk fills exactly between the filesystem rollback and its record.

    That moment cannot be produced for real on demand (a rollback frees space on
    the target before it writes), so this wraps the real log and refuses the
    ``rolled-back`` append alone with the error a full disk gives.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append_many(self, records: list[dict[str, Any]], **kwargs: Any) -> Any:
        if any(r["kind"] == EventKind.ROLLED_BACK for r in records):
            raise LogWriteError("cannot append to log: database or disk is full")
        return self._log.append_many(records, **kwargs)


def test_a_rollback_the_log_cannot_record_says_so_and_can_be_finished(
        tmp_path: Path, open_engine: Callable[..., InstallEngine]) -> None:
    root = tmp_path / "target"
    engine = open_engine(f"dir:{root}")
    register_files(engine)
    engine.execute()
    rec = engine._recorder
    head, cache = engine.log.head, engine.cache.to_plain()
    real_log, rec.log = rec.log, _FakeFullLog(rec.log)  # type: ignore[assignment]
    try:
        with pytest.raises(LogWriteError) as caught:
            engine.execute(start_from="b")
    finally:
        rec.log = real_log
    message = str(caught.value)
    assert message.startswith(f"the filesystem of dir:{root} was rolled back to "
                              ".step_a.done, destroying ")
    assert message.endswith("the cache and the log are unchanged: fix the log's disk, then "
                            "resume from 'b' again to finish the rollback")
    assert "\n" not in message
    # The filesystem is at before-b; the log and the cache are as they were.
    assert files_in(root) == {"a.txt"}
    assert engine.log.head == head
    assert engine.cache.to_plain() == cache
    assert engine.state == "completed"
    assert engine.log.verify().ok
    # Later points lost their filesystem snapshots; b's own before-point still has its own.
    assert engine.resumable() == ["a", "b"]
    assert engine.execute(start_from="b").status is Status.SUCCESS
    assert files_in(root) == {"a.txt", "b.txt", "c.txt"}
    (started,) = [ev for ev in engine.log.query(kind=EventKind.EXECUTION_STARTED)
                  if ev.data["start_from"] == "b"]
    assert started.data["attempt"] == 2  # the refused attempt did not use up a number
