"""``zfs:pool/dataset``: a ZFS dataset (being written; see tests/snapshots/targets/test_zfs.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import TargetError
from .base import Target


class ZfsTarget(Target):
    """A ZFS dataset, snapshotted with ``zfs snapshot`` and rolled back with ``zfs rollback -r``."""

    scheme = "zfs"
    takes_fs_snapshots = True

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    @property
    def root(self) -> Path:
        raise TargetError("ZfsTarget is not implemented yet")

    @property
    def state_dir(self) -> Path:
        raise TargetError("ZfsTarget is not implemented yet")

    @property
    def spec(self) -> str:
        return f"zfs:{self.dataset}"

    def exists(self) -> bool:
        return False

    def prepare(self) -> None:
        raise TargetError("ZfsTarget is not implemented yet")
