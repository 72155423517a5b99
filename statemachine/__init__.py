"""installengine.statemachine: the engine facade, its lifecycle, checkpoints, plans and the CLI.

The names below load on first use (PEP 562), not when the package is imported:
the ``installengine`` console script lives in this package, and ``installengine
--help`` should cost the command line's definitions, not the whole engine.
``from installengine.statemachine import InstallEngine`` loads it as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from installengine.snapshots import (
        BtrfsTarget,
        DirectoryTarget,
        StateDir,
        Target,
        Verdict,
        ZfsTarget,
        target_from_spec,
    )

    from .checkpoint import Checkpoint, CheckpointCanceled, Context
    from .engine import InstallEngine
    from .errors import (
        EngineError,
        EngineStateError,
        LogIntegrityError,
        LogWriteError,
        NotResumableError,
        PlanError,
        RegistrationError,
        SchemaVersionError,
        SnapshotUnavailableError,
        TargetError,
        TargetLockedError,
        UsageError,
    )
    from .handle import ExecutionHandle
    from .results import ErrorInfo, ProgressEvent, Result, Status

#: public name -> the module that defines it
_HOMES = {
    **dict.fromkeys(["BtrfsTarget", "DirectoryTarget", "StateDir", "Target", "Verdict",
                     "ZfsTarget", "target_from_spec"], "installengine.snapshots"),
    **dict.fromkeys(["Checkpoint", "CheckpointCanceled", "Context"], ".checkpoint"),
    "InstallEngine": ".engine",
    **dict.fromkeys(["EngineError", "EngineStateError", "LogIntegrityError", "LogWriteError",
                     "NotResumableError", "PlanError", "RegistrationError",
                     "SchemaVersionError", "SnapshotUnavailableError", "TargetError",
                     "TargetLockedError", "UsageError"], ".errors"),
    "ExecutionHandle": ".handle",
    **dict.fromkeys(["ErrorInfo", "ProgressEvent", "Result", "Status"], ".results"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BtrfsTarget",
    "Checkpoint",
    "CheckpointCanceled",
    "Context",
    "DirectoryTarget",
    "EngineError",
    "EngineStateError",
    "ErrorInfo",
    "ExecutionHandle",
    "InstallEngine",
    "LogIntegrityError",
    "LogWriteError",
    "NotResumableError",
    "PlanError",
    "ProgressEvent",
    "RegistrationError",
    "Result",
    "SchemaVersionError",
    "SnapshotUnavailableError",
    "StateDir",
    "Status",
    "Target",
    "TargetError",
    "TargetLockedError",
    "UsageError",
    "Verdict",
    "ZfsTarget",
    "target_from_spec",
]
