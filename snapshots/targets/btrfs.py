"""``btrfs:/path``: a btrfs subvolume (being written; see tests/snapshots/targets/test_btrfs.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import TargetError
from .base import Target


class BtrfsTarget(Target):
    """A btrfs subvolume, read-only snapshots, rolled back to a writable one."""

    scheme = "btrfs"
    takes_fs_snapshots = True

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    @property
    def root(self) -> Path:
        raise TargetError("BtrfsTarget is not implemented yet")

    @property
    def state_dir(self) -> Path:
        raise TargetError("BtrfsTarget is not implemented yet")

    @property
    def spec(self) -> str:
        return f"btrfs:{self.dataset}"

    def exists(self) -> bool:
        return False

    def prepare(self) -> None:
        raise TargetError("BtrfsTarget is not implemented yet")
