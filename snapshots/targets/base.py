"""The Target interface every install target implements."""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TargetError


@dataclass(frozen=True, slots=True)
class FsSnapshot:
    """A filesystem snapshot of a target, as the target lists it.

    ``id`` tells apart two snapshots that had the same name at different times
    (a re-taken ``.step_x.before``), so a point never trusts a namesake.
    """

    name: str
    id: str


class Target(ABC):
    """Where an install goes: a durable state directory, and maybe filesystem snapshots.

    The state directory holds the log and snapshot files; the target's own
    rollbacks never touch it. ``root`` is where the install writes.
    """

    #: spec prefix, e.g. "dir"
    scheme: str = ""
    #: whether snapshot() and rollback() act on the filesystem
    takes_fs_snapshots: bool = False

    @property
    @abstractmethod
    def root(self) -> Path:
        """The path the install writes to."""

    @property
    @abstractmethod
    def state_dir(self) -> Path:
        """Durable directory for the log, snapshot files and the lock."""

    @property
    @abstractmethod
    def spec(self) -> str:
        """The spec string that recreates this target, e.g. ``dir:/mnt/install``."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the target (dataset, subvolume, directory) is there."""

    @abstractmethod
    def prepare(self) -> None:
        """Create what is missing (state directory with mode 0700, ...).

        :raises TargetError: when the target cannot be prepared.
        """

    def snapshot(self, name: str) -> FsSnapshot:
        """Take filesystem snapshot ``name``, replacing one of the same name.

        :raises TargetError: when the tool fails.
        """
        raise TargetError(f"target {self.spec} takes no filesystem snapshots")

    def rollback(self, name: str) -> list[str]:
        """Roll the filesystem back to ``name``; later snapshots are destroyed and returned.

        :raises TargetError: when the snapshot is missing or the tool fails.
        """
        raise TargetError(f"target {self.spec} takes no filesystem snapshots")

    def list_snapshots(self) -> list[FsSnapshot]:
        """This target's installengine snapshots, oldest first."""
        return []

    def destroy_snapshot(self, name: str) -> None:
        """Destroy snapshot ``name``; a missing one is not an error.

        :raises TargetError: when the tool fails.
        """
        return None

    def remove_strays(self) -> list[str]:
        """Remove half-written snapshots a killed engine left behind; call only under the lock."""
        return []

    def describe(self) -> dict[str, Any]:
        """What the log records about this target when it is attached."""
        return {"spec": self.spec, "root": str(self.root), "state_dir": str(self.state_dir),
                "takes_fs_snapshots": self.takes_fs_snapshots}

    def __repr__(self) -> str:
        return f"target_from_spec({self.spec!r})"


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 and check it is ours.

    :raises TargetError: when it is a symlink, not a directory, or owned by another user.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise TargetError(f"cannot create state directory {path}: {err}") from err
    st = path.lstat()
    if path.is_symlink() or not path.is_dir():
        raise TargetError(f"{path} is a symlink or not a directory; remove it or pick another path")
    if st.st_uid != os.getuid():
        raise TargetError(f"{path} is owned by uid {st.st_uid}, not by us ({os.getuid()}); "
                          "pick a directory you own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


SNAPSHOT_PREFIX = ".step_"


def fsync_dir(path: Path) -> None:
    """fsync a directory: a rename is durable only once its directory entry is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(top: Path) -> None:
    """fsync every regular file and directory under ``top``, so a copy survives a power cut.

    Other files (symlinks, FIFOs, devices) have nothing to flush but their
    directory entry, which their directory's fsync covers; opening a FIFO
    would block.
    """
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                fsync_file(path)
        fsync_dir(Path(dirpath))


def fsync_file(path: str | Path) -> None:
    """fsync one regular file, without following a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
