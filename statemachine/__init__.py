"""installengine.statemachine: the engine facade, its lifecycle, checkpoints, plans and the CLI."""

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
