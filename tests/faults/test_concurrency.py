"""Two engines on one target, started together many times: exactly one proceeds.

The other gets TargetLockedError naming the holder, and nothing of the loser
ever reaches the log: every session's events are one contiguous run from its
``session-started`` to its ``session-ended``. A lock left by a SIGKILLed
process is taken over, and the takeover is logged with the old holder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from installengine.eventlog import EventLog
from installengine.statemachine import InstallEngine, Status, TargetLockedError

from .contender import PLAN
from .harness import ROOT, _wait_until_group_is_gone
from .steps import register_plan

THREAD_ROUNDS = 40
PROCESS_ROUNDS = 12


def assert_sessions_contiguous(log_path: Path) -> list[str]:
    """Each session's events form one unbroken run; return the sessions in order."""
    with EventLog.open(log_path, readonly=True) as log:
        assert log.verify().ok
        events = list(log.query())
    runs: list[str] = []
    for ev in events:
        if not runs or runs[-1] != ev.session:
            assert ev.session not in runs, f"session {ev.session} resumes at event {ev.seq}"
            assert ev.kind == "session-started", f"{ev.session} starts with {ev.kind}"
            runs.append(ev.session)
    for session in runs:
        kinds = [ev.kind for ev in events if ev.session == session]
        assert kinds[-1] == "session-ended", f"{session} did not end cleanly"
    return runs


def test_two_threads_racing_for_a_target_one_wins_the_other_is_told_who(scratch: Path) -> None:
    spec = f"dir:{scratch / 'target'}"
    for _ in range(THREAD_ROUNDS):
        start = threading.Barrier(2)
        tried = threading.Barrier(2)
        results: dict[int, InstallEngine | TargetLockedError] = {}

        def contend(slot: int, start: threading.Barrier = start,
                    tried: threading.Barrier = tried,
                    results: dict[int, InstallEngine | TargetLockedError] = results) -> None:
            start.wait(30)
            try:
                results[slot] = InstallEngine(spec)
            except TargetLockedError as err:
                results[slot] = err
            tried.wait(30)  # the winner keeps the target until the loser has tried

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        engines = [r for r in results.values() if isinstance(r, InstallEngine)]
        refused = [r for r in results.values() if isinstance(r, TargetLockedError)]
        assert len(engines) == 1, results
        assert len(refused) == 1, results
        locked = refused[0]
        assert locked.holder.get("pid") == os.getpid(), (str(locked), locked.holder)
        assert f"pid {os.getpid()}" in str(locked)
        with engines[0] as engine:
            register_plan(engine, PLAN)
            assert engine.execute().status is Status.SUCCESS
    sessions = assert_sessions_contiguous(scratch / "target" / ".installengine" / "log.db")
    assert len(sessions) == THREAD_ROUNDS


def _contenders(spec: str, where: Path, count: int,
                hold: bool = False) -> tuple[list[subprocess.Popen[str]], Callable[[], None]]:
    start, release = where / "start", where / "release"
    start.unlink(missing_ok=True)
    release.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tests.faults.contender", "--target", spec,
               "--start", str(start), "--release", str(release)]
    procs = [subprocess.Popen([*command, *(["--hold"] if hold else [])], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
             for _ in range(count)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
    start.touch()

    def let_go() -> None:
        release.touch()

    return procs, let_go


def test_two_processes_racing_for_a_target_one_wins_the_other_is_told_who(scratch: Path) -> None:
    spec = f"dir:{scratch / 'target'}"
    for _ in range(PROCESS_ROUNDS):
        procs, let_go = _contenders(spec, scratch, 2)
        firsts = {}
        for proc in procs:
            assert proc.stdout is not None
            firsts[proc.pid] = proc.stdout.readline().strip()
        winners = [pid for pid, line in firsts.items() if line.startswith("won ")]
        losers = [pid for pid, line in firsts.items() if line.startswith("locked ")]
        assert len(winners) == 1, firsts
        assert len(losers) == 1, firsts
        holder = json.loads(firsts[losers[0]].removeprefix("locked "))
        assert holder.get("pid") == winners[0], (holder, firsts)
        let_go()
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.read()  # not communicate(): lines readline() buffered are kept
            assert proc.wait(60) == 0, out
            if proc.pid == losers[0]:
                assert f"pid {winners[0]}" in out
    sessions = assert_sessions_contiguous(scratch / "target" / ".installengine" / "log.db")
    assert len(sessions) == PROCESS_ROUNDS


def test_a_stale_lock_of_a_killed_process_is_taken_over_and_logged(scratch: Path) -> None:
    spec = f"dir:{scratch / 'target'}"
    procs, _ = _contenders(spec, scratch, 1, hold=True)
    proc = procs[0]
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("won ")
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(TargetLockedError) as refused:
        InstallEngine(spec)
    assert refused.value.holder["pid"] == proc.pid
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    _wait_until_group_is_gone(proc.pid)  # a cp it was forking holds the lock a moment longer
    with InstallEngine(spec) as engine:
        takeovers = list(engine.log.query(session=engine.session.id, kind="lock-taken-over"))
        assert len(takeovers) == 1
        assert takeovers[0].data["previous_holder"]["pid"] == proc.pid
        register_plan(engine, PLAN)
        assert engine.resumable() == ["first", "second"]
        assert engine.execute(start_from="second").status is Status.SUCCESS


def test_a_reader_sees_a_verified_log_while_the_writer_runs(scratch: Path) -> None:
    spec = f"dir:{scratch / 'target'}"
    plan = [(f"c{i:02d}", "put", [f"k{i}", i]) for i in range(30)]
    with InstallEngine(spec) as engine:
        register_plan(engine, plan)
        reader = EventLog.open(scratch / "target" / ".installengine" / "log.db", readonly=True)
        reports = []
        handle = engine.start()
        try:
            while not handle.done:
                reports.append(reader.verify())
            reports.append(reader.verify())
        finally:
            reader.close()
        result = handle.wait(60)
        assert result is not None
        assert result.status is Status.SUCCESS
    assert len(reports) > 1
    assert all(r.ok for r in reports), [r for r in reports if not r.ok][:3]
