"""The handle ``start()`` returns for an execution running in its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .results import Result


class ExecutionHandle:
    """Wait for, pause or cancel a non-blocking execution."""

    def __init__(self, *, cancel: Callable[[], None], pause: Callable[[], None]) -> None:
        self._done = threading.Event()
        self._result: Result | None = None
        self._cancel = cancel
        self._pause = pause
        self.thread: threading.Thread | None = None

    def _finish(self, result: Result) -> None:
        self._result = result
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> Result | None:
        """The result once the execution has ended, else None."""
        return self._result

    def wait(self, timeout: float | None = None) -> Result | None:
        """Block until the execution ends (or ``timeout`` seconds pass); the result or None."""
        self._done.wait(timeout)
        return self._result

    def cancel(self) -> None:
        self._cancel()

    def pause(self) -> None:
        self._pause()

    def __repr__(self) -> str:
        return f"<ExecutionHandle done={self.done} result={self._result!r}>"
