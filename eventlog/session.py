"""Who wrote an event: one process's use of an engine, and whether it still runs."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if unknown.

    A pid alone is not an identity: the kernel reuses pids, so a lock or a
    temporary area is only stale when the process with that pid *and* that start
    time is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One process's use of an engine on one log."""

    id: str
    pid: int
    host: str
    user: str
    version: str
    started: str
    start_ticks: int | None = None

    @classmethod
    def current(cls, version: str) -> SessionInfo:
        import getpass  # here, not at import time: it pulls in pwd and more for one call

        pid = os.getpid()
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(id=uuid.uuid4().hex[:12], pid=pid, host=hostname(), user=user,
                   version=version, started=datetime.now(UTC).isoformat(),
                   start_ticks=process_start_ticks(pid))

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "host": self.host, "user": self.user,
                "version": self.version, "started": self.started,
                "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionInfo:
        return cls(id=str(data["id"]), pid=int(data["pid"]), host=str(data["host"]),
                   user=str(data.get("user", "")), version=str(data.get("version", "")),
                   started=str(data.get("started", "")),
                   start_ticks=data.get("start_ticks"))

    def is_alive(self) -> bool:
        """Whether this session's process still runs on this host.

        A session of another host is assumed alive: we cannot see its processes,
        and wrongly taking over a live install is worse than asking an operator.
        """
        if self.host != hostname():
            return True
        return pid_is_alive(self.pid, self.start_ticks)


def hostname() -> str:
    """This machine's host name (what ``socket.gethostname()`` returns, without importing socket)."""
    return os.uname().nodename


def pid_is_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start_ticks`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_ticks is None:
        return True
    return process_start_ticks(pid) == start_ticks
