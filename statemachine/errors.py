"""Every error installengine raises, importable from one place.

::

    EngineError                      (eventlog) base of every documented failure
    ├── UsageError                   (eventlog) bad arguments, unknown names, non-JSON values
    ├── LogIntegrityError            (eventlog) not a log, or its hash chain is broken
    ├── SchemaVersionError           (eventlog) the log is of a newer schema
    ├── LogWriteError                (eventlog) the log cannot be written (disk full)
    ├── TargetError                  (snapshots) a target or its tool failed
    │   └── TargetLockedError        (snapshots) another live engine holds the target
    ├── SnapshotUnavailableError     (snapshots) a point's state cannot be rebuilt
    ├── RegistrationError            a registration was refused
    ├── EngineStateError             an operation not allowed in the current lifecycle state
    ├── NotResumableError            a resume the rules refuse
    └── PlanError                    a bad plan file
"""

from __future__ import annotations

from installengine.eventlog.errors import (
    EngineError,
    LogIntegrityError,
    LogWriteError,
    SchemaVersionError,
    UsageError,
)
from installengine.snapshots.errors import (
    SnapshotUnavailableError,
    TargetError,
    TargetLockedError,
)


class RegistrationError(EngineError):
    """Raised when a checkpoint registration is refused; nothing is registered."""


class EngineStateError(EngineError):
    """Raised for an operation the lifecycle does not allow now; names the state and what is allowed."""

    def __init__(self, message: str, *, state: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.state = state
        self.allowed = allowed


class NotResumableError(EngineError):
    """Raised when executing from a checkpoint the resumability rules refuse; nothing changes."""

    def __init__(self, message: str, *, checkpoint: str, reason: str) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.reason = reason


class PlanError(EngineError):
    """Raised for a bad plan file; ``path`` and ``key`` say where."""

    def __init__(self, message: str, *, path: str, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


__all__ = [
    "EngineError",
    "EngineStateError",
    "LogIntegrityError",
    "LogWriteError",
    "NotResumableError",
    "PlanError",
    "RegistrationError",
    "SchemaVersionError",
    "SnapshotUnavailableError",
    "TargetError",
    "TargetLockedError",
    "UsageError",
]
