"""One engine per target: a second engine is refused naming the holder; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import (
    EngineError,
    InstallEngine,
    LogIntegrityError,
    TargetError,
    TargetLockedError,
)

from tests.statemachine.child import ROOT, child_env, command

CHILD_TIMEOUT = 60.0


@pytest.fixture(params=["dir", "state"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"{request.param}:{tmp_path / 'target'}"


def run_child(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(command(request), cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return done.returncode, json.loads(lines[-1])


@pytest.fixture
def holding_child(target: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A child process that holds an engine on ``target`` until its stdin gets a line."""
    child = subprocess.Popen(command({"target": target, "hold": True}), cwd=ROOT,
                             env=child_env(), text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        # readline blocks until the child has opened the engine and said so
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "child said nothing"
        yield child, json.loads(line)
    finally:
        if child.poll() is None:
            try:
                child.communicate("\n", timeout=CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate(timeout=CHILD_TIMEOUT)


def test_a_second_engine_in_another_thread_is_refused_naming_the_holder(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    first = open_engine(target)
    caught: list[BaseException] = []

    def second() -> None:
        try:
            InstallEngine(target).close()
        except BaseException as err:  # examined in the test thread
            caught.append(err)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(CHILD_TIMEOUT)
    assert not thread.is_alive()
    (err,) = caught
    assert isinstance(err, TargetLockedError)
    assert isinstance(err, TargetError)
    assert isinstance(err, EngineError)
    assert err.holder["pid"] == os.getpid()
    assert err.holder["host"] == socket.gethostname()
    assert err.holder["id"] == first.session.id
    assert f"pid {os.getpid()} on {socket.gethostname()}" in str(err)
    # the holder is unharmed
    assert first.execute().status.name == "SUCCESS"


def test_a_second_engine_in_this_thread_is_refused_too(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    open_engine(target)
    with pytest.raises(TargetLockedError, match=f"pid {os.getpid()}"):
        InstallEngine(target)


def test_an_engine_in_another_process_is_refused_naming_our_pid_and_host(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(target)
    code, report = run_child({"target": target})
    assert code == 3
    assert report["error"] == "TargetLockedError"
    assert report["holder"]["pid"] == os.getpid()
    assert report["holder"]["host"] == socket.gethostname()
    assert f"pid {os.getpid()} on {socket.gethostname()}" in report["message"]
    # the refused engine wrote nothing to the holder's log
    sessions = {ev.session for ev in engine.log.query()}
    assert sessions == {engine.session.id}


def test_an_engine_here_is_refused_while_another_process_holds_the_target(
        target: str, holding_child: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    _, ready = holding_child
    with pytest.raises(TargetLockedError) as info:
        InstallEngine(target)
    assert info.value.holder["pid"] == ready["pid"]
    assert info.value.holder["host"] == socket.gethostname()
    assert f"pid {ready['pid']} on {socket.gethostname()}" in str(info.value)


def test_after_close_the_target_is_free(target: str,
                                        open_engine: Callable[..., InstallEngine]) -> None:
    first = InstallEngine(target)
    first.close()
    second = open_engine(target)
    # a clean close is no takeover
    assert list(second.log.query(kind=EventKind.LOCK_TAKEN_OVER)) == []
    second.close()
    code, report = run_child({"target": target})
    assert code == 0, report


def test_after_the_other_process_ends_the_target_is_free(
        target: str, holding_child: tuple[subprocess.Popen[str], dict[str, Any]],
        open_engine: Callable[..., InstallEngine]) -> None:
    child, _ = holding_child
    child.communicate("\n", timeout=CHILD_TIMEOUT)
    assert child.returncode == 0
    engine = open_engine(target)
    assert list(engine.log.query(kind=EventKind.LOCK_TAKEN_OVER)) == []


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_logged(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    # the child exits without closing its engine: its holder record stays behind
    code, report = run_child({"target": target, "close": False})
    assert code == 0
    engine = open_engine(target)
    (ev,) = engine.log.query(kind=EventKind.LOCK_TAKEN_OVER)
    assert ev.session == engine.session.id
    holder = ev.data["previous_holder"]
    assert holder["pid"] == report["pid"]
    assert holder["id"] == report["session"]
    assert holder["host"] == socket.gethostname()
    # recorded right after this session started
    kinds = [e.kind for e in engine.log.query(session=engine.session.id)]
    assert kinds[:2] == ["session-started", "lock-taken-over"]


def test_a_lock_taken_over_is_released_cleanly_afterwards(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    run_child({"target": target, "close": False})
    InstallEngine(target).close()
    engine = open_engine(target)
    assert len(list(engine.log.query(kind=EventKind.LOCK_TAKEN_OVER))) == 1


def test_the_lock_file_is_private(target: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(target)
    assert engine.target is not None
    lock = engine.target.state_dir / "lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    engine.close()
    assert lock.read_text() == ""


def test_attaching_a_locked_target_is_refused_and_the_engine_goes_on(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    holder = open_engine(target)
    engine = open_engine()
    with pytest.raises(TargetLockedError, match=f"pid {os.getpid()}"):
        engine.attach_target(target)
    assert engine.target is None
    engine.register("a", "tests.statemachine.steps:record")
    assert engine.execute().status.name == "SUCCESS"
    assert holder.log.verify().ok


def test_an_engine_that_fails_to_open_releases_the_target(
        target: str, open_engine: Callable[..., InstallEngine]) -> None:
    engine = open_engine(target)
    engine.register("a", "tests.statemachine.steps:record")
    engine.execute()
    assert engine.target is not None
    log_path = engine.log.path
    engine.close()
    # damage one point's data so that reading the lineage fails while opening
    with sqlite3.connect(log_path) as db:
        db.execute("UPDATE events SET data = '{broken' WHERE seq = "
                   "(SELECT MIN(seq) FROM events WHERE kind = 'snapshot-taken')")
    db.close()
    for _ in range(2):  # the second try must meet the same error, not our own lock
        with pytest.raises(LogIntegrityError):
            InstallEngine(target)
    code, report = run_child({"target": target})
    assert (code, report.get("error")) == (3, "LogIntegrityError"), report
