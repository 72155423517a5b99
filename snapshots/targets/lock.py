"""One engine per target: an flock'd file in the state directory naming its holder.

The kernel drops an flock when its process dies, so a lock can never be held by
a dead process; what a crash leaves behind is the holder's record, which tells
the next engine that it took over from a session that did not end cleanly.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from ..errors import TargetError, TargetLockedError

LOCK_NAME = "lock"
#: seconds a refused engine waits for the holder to finish writing its record
HOLDER_WAIT = 0.5


class TargetLock:
    """The lock on one state directory; a context manager, also ``close()``."""

    def __init__(self, state_dir: Path, holder: dict[str, Any]) -> None:
        self.path = state_dir / LOCK_NAME
        self.holder = holder
        self._fd: int | None = None
        #: the record of a previous holder that never released the lock (it crashed)
        self.taken_over_from: dict[str, Any] | None = None

    def acquire(self) -> Self:
        """Take the lock.

        :raises TargetLockedError: when another live engine holds it.
        :raises TargetError: when the lock is a symlink or not a regular file.
        """
        try:
            # O_NOFOLLOW: a planted symlink must not make us truncate the file it points to
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise TargetError(f"cannot open the lock {self.path}: {err.strerror or err}; it "
                              "must be a regular file (remove it if it is a symlink)") from err
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TargetError(f"the lock {self.path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            previous = _await_holder(fd)
            os.close(fd)
            who = (f"pid {previous.get('pid')} on {previous.get('host')}" if previous
                   else "another engine")
            raise TargetLockedError(
                f"target state {self.path.parent} is in use by {who}; wait for it to finish "
                "or stop it", holder=previous or {}) from None
        previous = _read_holder(fd)
        if previous:
            self.taken_over_from = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(self.holder), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def close(self) -> None:
        """Release the lock and clear the holder record (a clean end)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _await_holder(fd: int) -> dict[str, Any] | None:
    """The record of the engine that holds the lock.

    The holder writes it just after it takes the lock, so a refused engine can
    find it empty or half written: wait briefly for a whole record before
    naming no one.
    """
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        holder = _read_holder(fd)
        if (holder and "unreadable" not in holder) or time.monotonic() >= deadline:
            return holder
        time.sleep(0.002)


def _read_holder(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"unreadable": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else None
