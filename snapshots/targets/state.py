"""``state:/path``: only a state directory; the filesystem is never snapshotted."""

from __future__ import annotations

from pathlib import Path

from .base import Target, make_private_dir


class StateDir(Target):
    """A durable state directory and nothing else: checkpoints must be idempotent.

    Resuming after a restart rolls back the data cache only, so a checkpoint
    that wrote files must cope with finding them already there.
    """

    scheme = "state"
    takes_fs_snapshots = False

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path).absolute()

    @property
    def root(self) -> Path:
        return self._path

    @property
    def state_dir(self) -> Path:
        return self._path

    @property
    def spec(self) -> str:
        return f"state:{self._path}"

    def exists(self) -> bool:
        return self._path.is_dir()

    def prepare(self) -> None:
        make_private_dir(self._path)
