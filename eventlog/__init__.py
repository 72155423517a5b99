"""installengine.eventlog: the append-only, hash-chained SQLite log of everything."""

from .errors import (
    EngineError,
    LogIntegrityError,
    LogWriteError,
    SchemaVersionError,
    UsageError,
)
from .events import Event, EventKind, VerifyReport
from .hashing import CheckedJSON, JSONValue, canonical_json, check_json, sha256_hex
from .log import EventLog
from .session import SessionInfo, pid_is_alive, process_start_ticks

__all__ = [
    "CheckedJSON",
    "EngineError",
    "Event",
    "EventKind",
    "EventLog",
    "JSONValue",
    "LogIntegrityError",
    "LogWriteError",
    "SchemaVersionError",
    "SessionInfo",
    "UsageError",
    "VerifyReport",
    "canonical_json",
    "check_json",
    "pid_is_alive",
    "process_start_ticks",
    "sha256_hex",
]
