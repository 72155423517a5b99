"""installengine.snapshots: the data cache, snapshot points, targets and the resumability rules."""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .cache import CacheDict, CacheList, DataCache
from .diff import Patch, apply, diff
from .digest import DigestTree, state_digest
from .errors import SnapshotUnavailableError, TargetError, TargetLockedError
from .lineage import Lineage, fold
from .materialize import FileCheck, check_files, decide_rebuilt, materialize
from .points import SnapshotPoint, When, fs_snapshot_name
from .recorder import Recorder, read_lineage
from .rules import (
    Decision,
    FsSnapshotCheck,
    Registered,
    Verdict,
    check_fs_snapshots,
    decide,
    explain,
)
from .store import SnapshotStore
from .targets import DirectoryTarget, FsSnapshot, StateDir, Target, target_from_spec
from .targets.lock import TargetLock
from .tempdir import create_area, gc, remove_area

if _TYPE_CHECKING:
    from .targets.btrfs import BtrfsTarget
    from .targets.zfs import ZfsTarget


def __getattr__(name: str) -> _Any:
    """ZfsTarget and BtrfsTarget load with their tool-running code on first use."""
    if name in ("ZfsTarget", "BtrfsTarget"):
        from . import targets

        return getattr(targets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ZfsTarget", "BtrfsTarget"})

__all__ = [
    "BtrfsTarget",
    "CacheDict",
    "CacheList",
    "DataCache",
    "Decision",
    "DigestTree",
    "DirectoryTarget",
    "FileCheck",
    "FsSnapshot",
    "FsSnapshotCheck",
    "Lineage",
    "Patch",
    "Recorder",
    "Registered",
    "SnapshotPoint",
    "SnapshotStore",
    "SnapshotUnavailableError",
    "StateDir",
    "Target",
    "TargetError",
    "TargetLock",
    "TargetLockedError",
    "Verdict",
    "When",
    "ZfsTarget",
    "apply",
    "check_files",
    "check_fs_snapshots",
    "create_area",
    "decide",
    "decide_rebuilt",
    "diff",
    "explain",
    "fold",
    "fs_snapshot_name",
    "gc",
    "materialize",
    "read_lineage",
    "remove_area",
    "state_digest",
    "target_from_spec",
]
