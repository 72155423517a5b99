"""Errors raised by the snapshot layer and its targets."""

from __future__ import annotations

from typing import Any

from installengine.eventlog.errors import EngineError


class TargetError(EngineError):
    """Raised when a target or its tool (zfs, btrfs, cp) fails; carries the command and stderr."""

    def __init__(self, message: str, *, command: list[str] | None = None,
                 returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class TargetLockedError(TargetError):
    """Raised when another live engine holds the target; ``holder`` says who (pid, host)."""

    def __init__(self, message: str, *, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class SnapshotUnavailableError(EngineError):
    """Raised when the state at a snapshot point cannot be materialized from the log."""
