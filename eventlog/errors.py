"""The root of the error tree and the errors the event log raises.

Every documented failure of installengine derives from :class:`EngineError`, which
lives here, in the lowest layer, so that every package can raise and catch it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every documented installengine failure."""


class UsageError(EngineError):
    """Raised for bad arguments: unknown names, bad filters, writing a read-only log."""


class LogIntegrityError(EngineError):
    """Raised when a file is not an installengine log or its hash chain is broken."""

    def __init__(self, message: str, *, first_bad_seq: int | None = None) -> None:
        super().__init__(message)
        self.first_bad_seq = first_bad_seq


class SchemaVersionError(EngineError):
    """Raised when a log was written by a newer installengine than this one."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class LogWriteError(EngineError):
    """Raised when an append cannot be written (disk full, I/O error); none of it was kept."""
