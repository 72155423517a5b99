"""Sessions: who wrote an event, and whether that process still runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from installengine.eventlog import (
    EventKind,
    EventLog,
    SessionInfo,
    check_json,
    pid_is_alive,
    process_start_ticks,
)


def _uptime_ticks() -> int:
    with open("/proc/uptime") as uptime:
        seconds = float(uptime.read().split()[0])
    return int(seconds * os.sysconf("SC_CLK_TCK")) + 1


def test_the_current_session_describes_this_process() -> None:
    session = SessionInfo.current("1.2.3")
    assert session.pid == os.getpid()
    assert session.host == socket.gethostname()
    assert session.user
    assert session.version == "1.2.3"
    assert len(session.id) == 12
    int(session.id, 16)
    started = datetime.fromisoformat(session.started)
    assert started.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=1)
    assert session.start_ticks == process_start_ticks(os.getpid())
    assert session.is_alive()


def test_every_session_gets_its_own_id() -> None:
    assert len({SessionInfo.current("1").id for _ in range(50)}) == 50


SESSIONS = st.builds(
    SessionInfo,
    id=st.text(min_size=1, max_size=12),
    pid=st.integers(1, 2**22),
    host=st.text(max_size=20),
    user=st.text(max_size=20),
    version=st.text(max_size=10),
    started=st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    start_ticks=st.none() | st.integers(0, 2**40),
)


@given(session=SESSIONS)
def test_a_session_survives_its_json_form(session: SessionInfo) -> None:
    data = session.as_json()
    check_json(data)
    assert SessionInfo.from_json(data) == session


def test_a_session_round_trips_through_the_log(tmp_path: Path) -> None:
    session = SessionInfo.current("0.1.0")
    with EventLog.open(tmp_path / "log.db", durable=False) as log:
        log.append(EventKind.SESSION_STARTED, session=session.id, data=session.as_json())
        (event,) = log.query(kind=EventKind.SESSION_STARTED)
    assert event.session == session.id
    assert SessionInfo.from_json(event.data) == session


def test_a_session_written_without_optional_fields_still_reads() -> None:
    session = SessionInfo.from_json({"id": "abc", "pid": "42", "host": "h"})
    assert session == SessionInfo(id="abc", pid=42, host="h", user="", version="", started="",
                                  start_ticks=None)


def test_a_finished_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    ticks = process_start_ticks(child.pid)
    assert ticks is not None
    assert pid_is_alive(child.pid, ticks)
    assert SessionInfo(id="x", pid=child.pid, host=socket.gethostname(), user="u", version="v",
                       started="", start_ticks=ticks).is_alive()
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=30)
    # Even if the kernel reuses the pid at once, the start time tells the two apart.
    assert not pid_is_alive(child.pid, ticks)
    assert not SessionInfo(id="x", pid=child.pid, host=socket.gethostname(), user="u", version="v",
                           started="", start_ticks=ticks).is_alive()


def test_a_reused_pid_with_another_start_time_is_not_the_same_process() -> None:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    assert pid_is_alive(os.getpid(), ticks)
    assert not pid_is_alive(os.getpid(), ticks + 1)
    assert pid_is_alive(os.getpid(), None)


def test_a_session_of_another_host_is_assumed_alive() -> None:
    far = SessionInfo(id="x", pid=2**22 + 1, host=socket.gethostname() + ".elsewhere", user="u",
                      version="v", started="", start_ticks=1)
    assert far.is_alive()
    assert not pid_is_alive(far.pid, far.start_ticks)


def test_start_ticks_of_a_missing_process_is_none() -> None:
    assert process_start_ticks(2**22 + 1) is None  # above the kernel's pid_max limit


def test_start_ticks_are_read_past_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # The kernel names the process after the file it ran; this one breaks naive parsing.
    odd = tmp_path / "x) (y z"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with open(f"/proc/{child.pid}/stat") as stat:
            assert "(x) (y z)" in stat.read()
        ticks = process_start_ticks(child.pid)
        mine = process_start_ticks(os.getpid())
        assert ticks is not None
        assert mine is not None
        # Started after this process and before now: the start time field, not a neighbour.
        assert mine <= ticks <= _uptime_ticks()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
