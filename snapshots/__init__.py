"""installengine.snapshots: the data cache, snapshot points, targets and the resumability rules."""

from .cache import CacheDict, CacheList, DataCache
from .diff import Patch, apply, diff
from .digest import DigestTree, state_digest
from .errors import SnapshotUnavailableError, TargetError, TargetLockedError
from .lineage import Lineage, fold
from .materialize import FileCheck, check_files, materialize
from .points import SnapshotPoint, When, fs_snapshot_name
from .recorder import Recorder, read_lineage
from .rules import Decision, Registered, Verdict, decide, explain
from .store import SnapshotStore
from .targets import (
    BtrfsTarget,
    DirectoryTarget,
    FsSnapshot,
    StateDir,
    Target,
    ZfsTarget,
    target_from_spec,
)
from .targets.lock import TargetLock
from .tempdir import create_area, gc, remove_area

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
    "create_area",
    "decide",
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
