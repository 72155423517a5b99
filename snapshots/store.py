"""Snapshot files: caches of the log, named by seq and digest, written atomically.

A file is never trusted by its name alone: materializing checks the digest of
what it rebuilds, and a file that fails is set aside and the log used instead.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import TargetError
from .targets.base import make_private_dir

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{12})-([0-9a-f]{64})\.json$")
MAX_FILE_BYTES = 2**31


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    seq: int
    digest: str
    path: Path
    size: int


class SnapshotStore:
    """The snapshot files of one log, in ``<state_dir>/snapshots``."""

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self.directory = directory
        self.durable = durable

    def path_for(self, seq: int, digest: str) -> Path:
        return self.directory / f"{seq:012d}-{digest}.json"

    def write(self, seq: int, digest: str, data: bytes) -> Path:
        """Write a file atomically: temp file, fsync, rename, fsync the directory.

        :raises TargetError: when the file cannot be written (e.g. the disk is full).
        """
        make_private_dir(self.directory)
        final = self.path_for(seq, digest)
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if self.durable:
                # fsync the directory too: the rename is durable only once its entry is.
                dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise TargetError(f"cannot write snapshot file {final}: {err.strerror or err}; "
                              "free space in the state directory and retry") from err
        return final

    def read(self, seq: int, digest: str) -> bytes | None:
        """The bytes of a file, or None if missing, not a regular file, or unreadable."""
        path = self.path_for(seq, digest)
        try:
            # O_NONBLOCK: opening a FIFO put in this file's place would otherwise block forever.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                logger.warning("ignoring snapshot file %s: not a regular file", path)
                return None
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def remove_strays(self) -> list[str]:
        """Remove temp files of writes a killed engine never finished; call only under the lock."""
        if not self.directory.is_dir():
            return []
        strays = [e.name for e in os.scandir(self.directory)
                  if e.name.startswith(".tmp-") and e.is_file(follow_symlinks=False)]
        for name in strays:
            (self.directory / name).unlink(missing_ok=True)
        return strays

    def has(self, seq: int, digest: str) -> bool:
        return self.path_for(seq, digest).is_file()

    def files(self) -> list[SnapshotFile]:
        """Every snapshot file, by seq; symlinks and strays are listed too, for verify."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in os.scandir(self.directory):
            m = _NAME.fullmatch(entry.name)
            if m:
                size = entry.stat(follow_symlinks=False).st_size
                found.append(SnapshotFile(int(m.group(1)), m.group(2), Path(entry.path), size))
        return sorted(found, key=lambda f: f.seq)

    def remove(self, seq: int, digest: str) -> bool:
        try:
            self.path_for(seq, digest).unlink()
        except FileNotFoundError:
            return False
        return True
