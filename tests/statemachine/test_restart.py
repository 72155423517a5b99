"""Resuming after a restart: a real second process runs or crashes, this one resumes.

Each test runs one engine session in a child process (tests/statemachine/child.py)
against a ``dir:`` target, then opens a new engine on the same target here and
checks what the rules allow. The crash tests SIGKILL the child inside a checkpoint.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import InstallEngine, NotResumableError, Status

from tests.statemachine.child import ROOT, child_env, command
from tests.statemachine.steps import ref

CHILD_TIMEOUT = 60.0


def checkpoint(name: str, call: str, *args: Any, version: str | None = None) -> dict[str, Any]:
    return {"name": name, "call": ref(call), "args": list(args), "version": version}


def standard_plan() -> list[dict[str, Any]]:
    return [checkpoint("a", "write_file", "a.txt", "from a"),
            checkpoint("b", "append_item", "b"),
            checkpoint("c", "write_file", "c.txt", "from c"),
            checkpoint("d", "append_item", "d")]


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(command(request), cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def register(engine: InstallEngine, plan: list[dict[str, Any]]) -> None:
    for cp in plan:
        engine.register(cp["name"], cp["call"], args=cp["args"], version=cp["version"])


def files_in(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and ".installengine" not in p.parts}


@pytest.fixture
def target(tmp_path: Path) -> str:
    return f"dir:{tmp_path / 'target'}"


@pytest.fixture
def reference(tmp_path: Path) -> Callable[[list[dict[str, Any]]], tuple[dict[str, Any],
                                                                        dict[str, str]]]:
    """An uninterrupted run of a plan in its own child and target: (cache, files)."""
    def run(plan: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
        root = tmp_path / "reference"
        report = run_child({"target": f"dir:{root}", "checkpoints": plan, "execute": {}})
        assert report["status"] == "SUCCESS"
        return report["cache"], files_in(root)
    return run


# -- clean exits ---------------------------------------------------------------------------------


def test_after_a_completed_run_every_checkpoint_is_resumable(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    report = run_child({"target": target, "checkpoints": standard_plan(), "execute": {}})
    assert report["status"] == "SUCCESS"
    assert report["resumable"] == ["a", "b", "c", "d"]
    engine = open_engine(target)
    register(engine, standard_plan())
    assert engine.resumable() == ["a", "b", "c", "d"]
    assert all(v.reason is None for v in engine.explain())
    sessions = [ev.session for ev in engine.log.query(kind=EventKind.SESSION_STARTED)]
    assert sessions == [report["session"], engine.session.id]
    assert engine.log.verify().ok


def test_resuming_after_a_restart_restores_cache_and_files(
        target: str, tmp_path: Path, open_engine: Callable[..., InstallEngine]) -> None:
    report = run_child({"target": target, "checkpoints": standard_plan(), "execute": {}})
    root = tmp_path / "target"
    (root / "c.txt").write_text("edited by hand after the run")
    engine = open_engine(target)
    register(engine, standard_plan())
    assert engine.execute(start_from="c").status is Status.SUCCESS
    assert engine.cache.to_plain() == report["cache"]
    assert files_in(root) == {"a.txt": "from a", "c.txt": "from c"}
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before c"


def test_a_new_engine_has_completed_nothing_in_its_view(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    run_child({"target": target, "checkpoints": standard_plan(), "execute": {}})
    engine = open_engine(target)
    register(engine, standard_plan())
    engine.cache["items"] = ["from the application"]
    assert engine.execute().status is Status.SUCCESS
    # a fresh attempt from the cache as the application left it: nothing rolled back
    assert engine.volatile["ran"] == ["b", "d"]  # write_file does not note itself
    assert engine.cache["items"] == ["from the application", "b", "d"]
    assert list(engine.log.query(kind=EventKind.ROLLED_BACK)) == []
    started = list(engine.log.query(kind=EventKind.EXECUTION_STARTED))[-1]
    assert started.data["continues_from"] == "fresh"


def test_after_a_paused_run_the_checkpoint_paused_before_is_resumable(
        target: str, open_engine: Callable[..., InstallEngine],
        reference: Callable[..., tuple[dict[str, Any], dict[str, str]]], tmp_path: Path) -> None:
    report = run_child({"target": target, "checkpoints": standard_plan(),
                        "execute": {"pause_before": "c"}})
    assert report["status"] == "PAUSED"
    engine = open_engine(target)
    register(engine, standard_plan())
    assert engine.resumable() == ["a", "b", "c"]
    (d,) = [v for v in engine.explain() if v.name == "d"]
    assert d.reason is not None
    assert d.reason.startswith("never completed")
    with pytest.raises(NotResumableError):
        engine.execute(start_from="d")
    assert engine.execute(start_from="c").status is Status.SUCCESS
    cache, files = reference(standard_plan())
    assert engine.cache.to_plain() == cache
    assert files_in(tmp_path / "target") == files


def test_after_a_failed_run_nothing_after_the_failure_is_resumable(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    plan = standard_plan()
    plan[1] = checkpoint("b", "append_then_fail", "b")
    report = run_child({"target": target, "checkpoints": plan, "execute": {}})
    assert report["status"] == "FAILED"
    engine = open_engine(target)
    register(engine, plan)
    assert engine.resumable() == ["a", "b"]
    reasons = {v.name: v.reason for v in engine.explain()}
    assert reasons["c"] == "predecessor 'b' failed; resume from 'b' first"
    assert reasons["d"] == reasons["c"]
    # after a restart with b fixed (registered differently), b resumes from a's completion
    engine.close()
    engine = open_engine(target)
    register(engine, standard_plan())
    assert engine.resumable() == ["a", "b"]
    assert engine.execute(start_from="b").status is Status.SUCCESS
    assert engine.cache["items"] == ["b", "d"]


def test_a_changed_registration_is_resumable_but_nothing_after_it(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    run_child({"target": target, "checkpoints": standard_plan(), "execute": {}})
    plan = standard_plan()
    plan[1]["version"] = "2"
    engine = open_engine(target)
    register(engine, plan)
    assert engine.resumable() == ["a", "b"]
    reasons = {v.name: v.reason for v in engine.explain()}
    assert reasons["c"] is not None
    assert reasons["c"].startswith("registration mismatch")
    assert engine.execute(start_from="b").status is Status.SUCCESS
    assert engine.resumable() == ["a", "b", "c", "d"]


def test_an_inserted_checkpoint_is_resumable_but_nothing_after_it(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    run_child({"target": target, "checkpoints": standard_plan(), "execute": {}})
    plan = standard_plan()
    plan.insert(1, checkpoint("new", "append_item", "new"))
    engine = open_engine(target)
    register(engine, plan)
    assert engine.resumable() == ["a", "new"]
    assert engine.execute(start_from="new").status is Status.SUCCESS
    assert engine.cache["items"] == ["new", "b", "d"]


def test_two_restarts_in_a_row_keep_the_lineage(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    run_child({"target": target, "checkpoints": standard_plan(),
               "execute": {"pause_before": "b"}})
    second = run_child({"target": target, "checkpoints": standard_plan(),
                        "execute": {"start_from": "b", "pause_before": "d"}})
    assert second["status"] == "PAUSED"
    engine = open_engine(target)
    register(engine, standard_plan())
    assert engine.resumable() == ["a", "b", "c", "d"]
    assert engine.execute(start_from="d").status is Status.SUCCESS
    assert engine.cache["items"] == ["b", "d"]
    assert len(list(engine.log.query(kind=EventKind.SESSION_STARTED))) == 3


# -- crashes ----------------------------------------------------------------------------------------


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A FIFO the crashing checkpoint writes its pid into, opened for reading without blocking.

    Waiting on it with select() is an event from the other process, not a sleep.
    """
    path = tmp_path / "marker"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, fd
    os.close(fd)


def wait_for_marker(fd: int, child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    # the child's stdout turns readable only when it reports its end (or dies): then
    # it will never reach the crash point, and waiting longer is pointless
    readable, _, _ = select.select([fd, child.stdout], [], [], CHILD_TIMEOUT)
    if fd not in readable:
        child.kill()
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
        pytest.fail(f"the child never reached the crash point: {out}{err}")
    data = os.read(fd, 100).decode()
    return int(data.strip())


def crash_child(request: dict[str, Any], marker: tuple[Path, int]) -> int:
    """Run ``request`` in a child, SIGKILL it at the crash point; its pid."""
    child = subprocess.Popen(command(request), cwd=ROOT, env=child_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pid = wait_for_marker(marker[1], child)
        assert pid == child.pid
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    return child.pid


def crash_plan(marker: Path) -> list[dict[str, Any]]:
    plan = standard_plan()
    plan[2] = checkpoint("c", "crash_point", str(marker))
    return plan


def test_a_crash_mid_checkpoint_is_resumed_from_that_checkpoint(
        target: str, tmp_path: Path, marker: tuple[Path, int],
        open_engine: Callable[..., InstallEngine],
        reference: Callable[..., tuple[dict[str, Any], dict[str, str]]]) -> None:
    plan = crash_plan(marker[0])
    pid = crash_child({"target": target, "checkpoints": plan, "execute": {},
                       "volatile": {"crash": True}}, marker)
    root = tmp_path / "target"
    assert (root / "c.partial").exists()

    engine = open_engine(target)
    (taken,) = engine.log.query(kind=EventKind.LOCK_TAKEN_OVER)
    assert taken.session == engine.session.id
    assert taken.data["previous_holder"]["pid"] == pid
    assert engine.log.verify().ok
    killed = next(iter(engine.log.query(kind=EventKind.SESSION_STARTED))).session
    assert list(engine.log.query(session=killed, kind=EventKind.SESSION_ENDED)) == []
    started = [ev.checkpoint for ev in engine.log.query(session=killed,
                                                        kind=EventKind.CHECKPOINT_STARTED)]
    assert started == ["a", "b", "c"]

    register(engine, plan)
    assert engine.resumable() == ["a", "b", "c"]
    reasons = {v.name: v.reason for v in engine.explain()}
    assert reasons["d"] is not None
    assert reasons["d"].startswith("never completed")

    assert engine.execute(start_from="c").status is Status.SUCCESS
    cache, files = reference(plan)
    assert engine.cache.to_plain() == cache
    assert files_in(root) == files
    assert "c-partial" not in engine.cache
    assert engine.log.verify().ok


def test_a_crash_mid_checkpoint_allows_resuming_an_earlier_checkpoint(
        target: str, tmp_path: Path, marker: tuple[Path, int],
        open_engine: Callable[..., InstallEngine],
        reference: Callable[..., tuple[dict[str, Any], dict[str, str]]]) -> None:
    plan = crash_plan(marker[0])
    crash_child({"target": target, "checkpoints": plan, "execute": {},
                 "volatile": {"crash": True}}, marker)
    engine = open_engine(target)
    register(engine, plan)
    assert engine.execute(start_from="b").status is Status.SUCCESS
    cache, files = reference(plan)
    assert engine.cache.to_plain() == cache
    assert files_in(tmp_path / "target") == files


def test_a_crash_after_a_resume_is_resumed_again(
        target: str, tmp_path: Path, marker: tuple[Path, int],
        open_engine: Callable[..., InstallEngine],
        reference: Callable[..., tuple[dict[str, Any], dict[str, str]]]) -> None:
    plan = crash_plan(marker[0])
    run_child({"target": target, "checkpoints": plan, "execute": {"pause_before": "c"}})
    crash_child({"target": target, "checkpoints": plan, "execute": {"start_from": "a"},
                 "volatile": {"crash": True}}, marker)
    engine = open_engine(target)
    register(engine, plan)
    assert engine.resumable() == ["a", "b", "c"]
    assert engine.execute(start_from="c").status is Status.SUCCESS
    cache, files = reference(plan)
    assert engine.cache.to_plain() == cache
    assert files_in(tmp_path / "target") == files
    assert len(list(engine.log.query(kind=EventKind.LOCK_TAKEN_OVER))) == 1


# -- a log rewritten so that its chain still verifies --------------------------------------------


def rewrite_with_a_valid_chain(log_path: Path, seq: int, edit: Callable[[Any], Any]) -> None:
    """Change event ``seq``'s data and re-hash the chain from there, as a forger would.

    The chain then verifies: only rebuilding the states shows that a recorded
    digest no longer matches what the log's diffs produce.
    """
    import sqlite3

    from installengine.eventlog.hashing import canonical_json, event_hash

    con = sqlite3.connect(log_path)
    try:
        rows = con.execute("SELECT seq, session, ts, kind, checkpoint, data, prev_hash FROM events "
                           "WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
        prev = rows[0][6]
        for s, session, ts, kind, cp, data, _ in rows:
            if s == seq:
                data = canonical_json(edit(json.loads(data))).decode()
            h = event_hash(seq=s, session=session, ts=ts, kind=kind, checkpoint=cp,
                           data_json=data, prev_hash=prev)
            con.execute("UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                        (data, prev, h, s))
            prev = h
        con.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
        con.commit()
    finally:
        con.close()


def test_a_point_whose_state_no_longer_rebuilds_to_its_digest_is_not_offered(target: str) -> None:
    with InstallEngine(target) as engine:
        for name in "abcd":
            engine.register(name, ref("append_item"), args=[name])
        assert engine.execute().status is Status.SUCCESS
        log_path = engine.log.path
        (b_change,) = [ev.seq for ev in engine.log.query(kind=EventKind.CACHE_CHANGED,
                                                          checkpoint="b")]

    def forge(data: Any) -> Any:
        (op,) = data["patch"]
        return {**data, "patch": [{**op, "value": "forged"}]}

    rewrite_with_a_valid_chain(Path(log_path), b_change, forge)
    with InstallEngine(target) as engine:
        for name in "abcd":
            engine.register(name, ref("append_item"), args=[name])
        assert engine.log.verify().ok  # the chain was re-hashed: only the digests tell
        verdicts = {v.name: v.reason for v in engine.explain()}
        # c resumes from its before-point, whose state now differs from its digest; d
        # from its own, folded from it
        assert engine.resumable() == ["a", "b"]
        assert verdicts["c"] is not None
        assert verdicts["c"].startswith("digest mismatch: the log rebuilds before c ")
        assert verdicts["d"] is not None
        assert verdicts["d"].startswith("digest mismatch: the log rebuilds before d ")
        head = engine.log.head
        with pytest.raises(NotResumableError, match="digest mismatch") as info:
            engine.execute(start_from="c")
        assert info.value.reason == verdicts["c"]
        assert engine.log.head == head
        # b's own before-point ("a completed") is untouched: resuming from b works
        assert engine.execute(start_from="b").status is Status.SUCCESS
        assert engine.cache["items"] == ["a", "b", "c", "d"]
        assert engine.resumable() == ["a", "b", "c", "d"]
