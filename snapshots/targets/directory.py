"""``dir:/path``: a plain directory, snapshotted by copying (reflink where possible)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from ..errors import TargetError
from .base import FsSnapshot, Target, fsync_dir, fsync_file, fsync_tree, make_private_dir
from .command import run

STATE_DIR_NAME = ".installengine"


class DirectoryTarget(Target):
    """An install into a directory; its copies live in its own state directory.

    Keeping the copies under ``<path>/.installengine/fs`` means the whole
    install state moves with the directory. The state directory itself is left
    out of every copy and every rollback.
    """

    scheme = "dir"
    takes_fs_snapshots = True

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path).absolute()
        self._prepared = False

    @property
    def root(self) -> Path:
        return self._path

    @property
    def state_dir(self) -> Path:
        return self._path / STATE_DIR_NAME

    @property
    def spec(self) -> str:
        return f"dir:{self._path}"

    @property
    def _fs_dir(self) -> Path:
        return self.state_dir / "fs"

    def exists(self) -> bool:
        return self._path.is_dir()

    def prepare(self) -> None:
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TargetError(f"cannot create target directory {self._path}: {err}") from err
        make_private_dir(self.state_dir)
        make_private_dir(self._fs_dir)
        self._prepared = True

    def _entries(self, where: Path) -> list[str]:
        return sorted(str(where / e) for e in os.listdir(where) if e != STATE_DIR_NAME)

    def _copy_into(self, source: Path, dest: Path) -> None:
        entries = self._entries(source)
        if entries:
            run(["cp", "-a", "--reflink=auto", *entries, str(dest)])

    def snapshot(self, name: str) -> FsSnapshot:
        if not (self._prepared and self._fs_dir.is_dir()):
            self.prepare()
        tmp = self._fs_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(mode=0o700)
            self._copy_into(self._path, tmp)
            self.destroy_snapshot(name)
            # The id starts with a nanosecond clock so that listing by id is creation order.
            snap_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
            (tmp / f".{STATE_DIR_NAME}-id").write_text(snap_id)
            # The point that names this copy is durable: so must the copy's contents be,
            # before the rename makes it a snapshot and the log commit records it. The
            # rename itself needs no flush: a power cut that undoes it leaves a point whose
            # filesystem snapshot is missing, which the rules never resume from.
            fsync_tree(tmp)
            os.rename(tmp, self._fs_dir / name)
        except OSError as err:  # a full disk, most likely
            shutil.rmtree(tmp, ignore_errors=True)
            raise TargetError(f"cannot take filesystem snapshot {name} of {self.spec}: "
                              f"{err.strerror or err}; free space on the target and retry") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FsSnapshot(name, snap_id)

    def remove_strays(self) -> list[str]:
        if not self._fs_dir.is_dir():
            return []
        strays = [e for e in os.listdir(self._fs_dir) if e.startswith(".tmp-")]
        for entry in strays:
            shutil.rmtree(self._fs_dir / entry, ignore_errors=True)
        return strays

    def list_snapshots(self) -> list[FsSnapshot]:
        if not self._fs_dir.is_dir():
            return []
        found: list[FsSnapshot] = []
        for entry in os.listdir(self._fs_dir):
            if entry.startswith(".tmp-"):
                continue
            id_file = self._fs_dir / entry / f".{STATE_DIR_NAME}-id"
            try:
                found.append(FsSnapshot(entry, id_file.read_text().strip()))
            except OSError:
                continue  # a half-removed copy is no snapshot
        return sorted(found, key=lambda s: s.id)

    def rollback(self, name: str) -> list[str]:
        snaps = self.list_snapshots()
        names = [s.name for s in snaps]
        if name not in names:
            raise TargetError(f"cannot roll {self.spec} back: snapshot {name!r} does not exist")
        source = self._fs_dir / name
        try:
            for entry in self._entries(self._path):
                p = Path(entry)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        except OSError as err:
            raise TargetError(f"cannot roll {self.spec} back to {name}: {err}") from err
        restored = [e for e in self._entries(source) if Path(e).name != f".{STATE_DIR_NAME}-id"]
        for entry in restored:
            run(["cp", "-a", "--reflink=auto", entry, str(self._path)])
        try:
            # The rolled-back event that follows is durable: so must the restored files be.
            for entry in restored:
                copied = self._path / Path(entry).name
                if copied.is_dir() and not copied.is_symlink():
                    fsync_tree(copied)
                elif copied.is_file() and not copied.is_symlink():
                    fsync_file(copied)
            fsync_dir(self._path)
        except OSError as err:
            raise TargetError(f"cannot flush {self.spec} after rolling it back to {name}: "
                              f"{err}") from err
        later = names[names.index(name) + 1 :]
        for n in later:
            self.destroy_snapshot(n)
        return later

    def destroy_snapshot(self, name: str) -> None:
        path = self._fs_dir / name
        try:
            if path.exists():
                shutil.rmtree(path)
        except OSError as err:
            raise TargetError(f"cannot destroy filesystem snapshot {path}: {err}") from err
