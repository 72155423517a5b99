"""``btrfs:/path``: a btrfs subvolume with read-only snapshots beside it, rolled back by swapping subvolumes.

Layout, for a target ``/mnt/fs/install``::

    /mnt/fs/install/                    the target subvolume (root)
    /mnt/fs/install/.installengine/     nested subvolume: the state directory
    /mnt/fs/.install.snapshots/         plain directory beside the target
        .step_<point>                   read-only snapshots of the target
        .rollback                       only while a rollback runs (see rollback())

A snapshot of a subvolume does not descend into nested subvolumes (they appear
as empty directories in it), so the state directory is never part of a
snapshot. A rollback replaces the whole target subvolume, so the state
subvolume is moved from the old one into the new one by ``rename``, which
btrfs allows between subvolumes of one filesystem and which keeps open files
(the engine's lock) working.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import TargetError
from .base import SNAPSHOT_PREFIX, FsSnapshot, Target, fsync_dir, make_private_dir
from .command import run

logger = logging.getLogger(__name__)

STATE_DIR_NAME = ".installengine"
#: the writable snapshot a rollback prepares, inside the snapshot directory
WORK_NAME = ".rollback"
TMP_PREFIX = ".tmp-"

#: every btrfs subvolume's top directory has this inode number (BTRFS_FIRST_FREE_OBJECTID)
SUBVOLUME_INODE = 256

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

_LIST_LINE = re.compile(r"^ID (\d+) .*?\bpath (.+)$")


@dataclass(frozen=True, slots=True)
class SubvolumeInfo:
    """What ``btrfs subvolume show`` says about one subvolume."""

    path: str
    name: str
    uuid: str
    subvolume_id: int
    generation: int
    gen_at_creation: int
    parent_uuid: str | None
    flags: str
    creation_time: str


@dataclass(frozen=True, slots=True)
class SubvolumeListing:
    """One line of ``btrfs subvolume list``: id and path relative to the filesystem's top level."""

    subvolume_id: int
    path: str


def parse_subvolume_show(text: str) -> SubvolumeInfo:
    """Parse the output of ``btrfs subvolume show PATH``.

    The first line is the path relative to the filesystem's top level; then
    come ``Key: value`` lines indented by one tab, and the ``Snapshot(s):``
    list indented by more.

    :raises TargetError: when a field the targets rely on is missing or not a number.
    """
    lines = text.splitlines()
    if not lines:
        raise TargetError("btrfs subvolume show printed nothing")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("\t\t") or not line.strip():
            continue  # a snapshot path under "Snapshot(s):", which the targets do not need
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        parent = fields.get("Parent UUID", "-")
        return SubvolumeInfo(
            path=lines[0].strip(), name=fields["Name"], uuid=fields["UUID"],
            subvolume_id=int(fields["Subvolume ID"]), generation=int(fields["Generation"]),
            gen_at_creation=int(fields["Gen at creation"]),
            parent_uuid=None if parent == "-" else parent, flags=fields.get("Flags", "-"),
            creation_time=fields.get("Creation time", ""))
    except (KeyError, ValueError) as err:
        raise TargetError(f"cannot parse btrfs subvolume show output (field {err}): "
                          f"{lines[0].strip()!r}") from err


def parse_subvolume_list(text: str) -> list[SubvolumeListing]:
    """Parse ``btrfs subvolume list`` output (any of its column options); ``path`` is always last.

    :raises TargetError: on a line that is not ``ID <n> ... path <path>``.
    """
    found: list[SubvolumeListing] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LIST_LINE.match(line.strip())
        if match is None:
            raise TargetError(f"cannot parse btrfs subvolume list line {line!r}")
        found.append(SubvolumeListing(int(match.group(1)), match.group(2)))
    return found


def order_snapshots(infos: dict[str, SubvolumeInfo]) -> list[FsSnapshot]:
    """Snapshots by creation, ``{name: info}`` → oldest first, id = the snapshot's UUID.

    The subvolume id orders them: btrfs hands out ids in increasing order and
    never below an existing one, while ``Gen at creation`` is shared by
    snapshots taken in one transaction and ``Creation time`` has whole seconds.
    """
    ordered = sorted(infos.items(), key=lambda item: item[1].subvolume_id)
    return [FsSnapshot(name, info.uuid) for name, info in ordered if name.startswith(SNAPSHOT_PREFIX)]


def mount_points(mountinfo: str) -> set[str]:
    """The mount points listed in ``/proc/self/mountinfo`` text (field 5, octal escapes undone)."""
    points: set[str] = set()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def _is_subvolume(path: Path) -> bool:
    """Whether ``path`` is the top directory of a subvolume (without running btrfs)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return path.is_dir() and not path.is_symlink() and st.st_ino == SUBVOLUME_INODE


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (``renameat2(RENAME_EXCHANGE)``): there is no instant without ``b``.

    :raises OSError: when the kernel or C library cannot do it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(38, "renameat2 is not available in this C library")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(a), None, str(b))


class BtrfsTarget(Target):
    """A btrfs subvolume, read-only snapshots beside it, rolled back to a writable snapshot.

    ``prepare()`` creates the subvolume when its path is missing, the nested
    state subvolume, and the snapshot directory; it also finishes or undoes a
    rollback that was interrupted by a crash.
    """

    scheme = "btrfs"
    takes_fs_snapshots = True

    def __init__(self, path: str | Path) -> None:
        self._path = Path(os.path.abspath(path))

    @property
    def root(self) -> Path:
        return self._path

    @property
    def state_dir(self) -> Path:
        return self._path / STATE_DIR_NAME

    @property
    def spec(self) -> str:
        return f"btrfs:{self._path}"

    @property
    def snapshot_dir(self) -> Path:
        """Where the snapshots live: beside the target, on the same filesystem."""
        return self._path.parent / f".{self._path.name}.snapshots"

    def exists(self) -> bool:
        """Whether the path is a btrfs subvolume.

        :raises TargetError: when btrfs itself cannot run.
        """
        if not self._path.is_dir():
            return False
        try:
            self._show(self._path)
        except TargetError as err:
            if err.returncode == 1:  # btrfs ran and said no
                return False
            raise
        return True

    def prepare(self) -> None:
        """Create the subvolume, the state subvolume (mode 0700) and the snapshot directory as needed.

        :raises TargetError: when the path is not a subvolume on btrfs, is a mount point, or btrfs fails.
        """
        path = self._path
        if not os.path.lexists(path):
            if not path.parent.is_dir():
                raise TargetError(f"cannot create btrfs subvolume {path}: {path.parent} does not exist; "
                                  "create it (on a btrfs filesystem) first")
            self._btrfs(["subvolume", "create", str(path)], about=path)
        if self._is_mount_point(path):
            raise TargetError(f"{path} is a mount point; a btrfs: target must be a subvolume below the mount "
                              "(its snapshots go beside it), e.g. btrfs subvolume create "
                              f"{path}/install")
        self._show(path)
        self._recover()
        state = self.state_dir
        if os.path.lexists(state) and not _is_subvolume(state):
            if state.is_dir() and not state.is_symlink() and not any(state.iterdir()):
                state.rmdir()  # the empty stand-in a snapshot leaves for a nested subvolume
            else:
                raise TargetError(f"{state} is a plain directory, not a subvolume, so it would be "
                                  "snapshotted and rolled back with the install; move its content away, "
                                  "remove it, and prepare again")
        if not os.path.lexists(state):
            self._btrfs(["subvolume", "create", str(state)], about=state)
        make_private_dir(state)
        make_private_dir(self.snapshot_dir)

    def snapshot(self, name: str) -> FsSnapshot:
        """Take a read-only snapshot ``name``; an older one of that name is replaced.

        The new snapshot is taken under a temporary name first, so a failure
        leaves the old one in place.

        :raises TargetError: when the name is invalid or btrfs fails.
        """
        self._check_snapshot_name(name)
        self.prepare()
        final = self.snapshot_dir / name
        tmp = self.snapshot_dir / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        self._btrfs(["subvolume", "snapshot", "-r", str(self._path), str(tmp)], about=self._path)
        try:
            if os.path.lexists(final):
                self._delete(final)
            os.rename(tmp, final)
            fsync_dir(self.snapshot_dir)
        except BaseException as err:
            if os.path.lexists(tmp):
                self._delete(tmp)
            if isinstance(err, OSError):
                raise TargetError(f"cannot store snapshot {final}: {err}") from err
            raise
        return FsSnapshot(name, self._show(final).uuid)

    def list_snapshots(self) -> list[FsSnapshot]:
        """The ``.step_`` snapshots in the snapshot directory, oldest first; id = UUID.

        :raises TargetError: when btrfs fails.
        """
        if not self.snapshot_dir.is_dir():
            return []
        infos: dict[str, SubvolumeInfo] = {}
        for entry in os.listdir(self.snapshot_dir):
            path = self.snapshot_dir / entry
            if entry.startswith(SNAPSHOT_PREFIX) and _is_subvolume(path):
                infos[entry] = self._show(path)
        return order_snapshots(infos)

    def rollback(self, name: str) -> list[str]:
        """Replace the target subvolume by a writable snapshot of ``name``; destroy and return later ones.

        Steps, each one leaving a state ``prepare()`` can repair after a crash:

        1. snapshot ``name`` writable as ``<snapshot dir>/.rollback``;
        2. move the state subvolume into it (one ``rename``);
        3. swap it with the target (one ``renameat2(RENAME_EXCHANGE)``), so the
           target path always exists and always holds the state;
        4. delete the old tree, now at ``.rollback``, and the later snapshots.

        A crash before 3 leaves the state inside ``.rollback``: ``prepare()`` moves
        it back and the rollback did not happen. A crash after 3 leaves only the
        old tree: ``prepare()`` deletes it and the rollback did happen (later
        snapshots not yet destroyed stay listed). Processes with a working
        directory or open files inside the target keep seeing the old tree.

        :raises TargetError: when ``name`` is not one of this target's snapshots, the target holds
            other nested subvolumes (they would be lost), or btrfs fails.
        """
        self._recover()
        names = [s.name for s in self.list_snapshots()]
        if name not in names:
            raise TargetError(f"cannot roll {self.spec} back: snapshot {name!r} does not exist; "
                              f"it has {', '.join(names) or 'no installengine snapshots'}")
        self._refuse_foreign_subvolumes()
        work = self.snapshot_dir / WORK_NAME
        self._btrfs(["subvolume", "snapshot", str(self.snapshot_dir / name), str(work)],
                    about=self.snapshot_dir / name)
        try:
            stand_in = work / STATE_DIR_NAME
            if os.path.lexists(stand_in):
                stand_in.rmdir()
            os.rename(self.state_dir, stand_in)
            _exchange(work, self._path)
        except OSError as err:
            self._recover()  # puts the state back where it was and drops the work copy
            raise TargetError(f"cannot roll {self.spec} back to {name}: {err}") from err
        try:
            fsync_dir(self._path.parent)
        except OSError as err:
            raise TargetError(f"rolled {self.spec} back to {name} but cannot make it durable: {err}") from err
        self._delete(work)
        later = names[names.index(name) + 1 :]
        for later_name in later:
            self._delete(self.snapshot_dir / later_name)
        return later

    def destroy_snapshot(self, name: str) -> None:
        """Delete snapshot ``name``; a missing one is not an error.

        :raises TargetError: when the name is invalid or btrfs fails.
        """
        self._check_snapshot_name(name)
        path = self.snapshot_dir / name
        if os.path.lexists(path):
            self._delete(path)

    def _recover(self) -> None:
        """Finish or undo a rollback that a crash interrupted, and drop half-taken snapshots."""
        if not self.snapshot_dir.is_dir():
            return
        work = self.snapshot_dir / WORK_NAME
        moved = work / STATE_DIR_NAME
        if _is_subvolume(moved) and not _is_subvolume(self.state_dir):
            logger.warning("a rollback of %s was interrupted with the state directory in %s; moving it back",
                           self.spec, moved)
            try:
                if os.path.lexists(self.state_dir):
                    self.state_dir.rmdir()  # only an empty stand-in can be there
                os.rename(moved, self.state_dir)
                fsync_dir(self._path)
            except OSError as err:
                raise TargetError(f"cannot move the state directory back from {moved} to {self.state_dir}: "
                                  f"{err}; move it by hand with mv") from err
        if os.path.lexists(work):
            self._delete(work)
        for entry in os.listdir(self.snapshot_dir):
            if entry.startswith(TMP_PREFIX):
                self._delete(self.snapshot_dir / entry)

    def _refuse_foreign_subvolumes(self) -> None:
        """Refuse a rollback that would drop nested subvolumes other than the state directory."""
        state_id = self._show(self.state_dir).subvolume_id
        nested = parse_subvolume_list(self._btrfs(["subvolume", "list", "-o", str(self._path)],
                                                  about=self._path))
        foreign = [s.path for s in nested if s.subvolume_id != state_id]
        if foreign:
            raise TargetError(f"cannot roll {self.spec} back: it contains subvolumes {', '.join(foreign)} "
                              "besides its state directory, and a rollback would lose them; move them out")

    def _check_snapshot_name(self, name: str) -> None:
        if not name or "/" in name or name in {".", ".."} or name == WORK_NAME or name.startswith(TMP_PREFIX):
            raise TargetError(f"{name!r} is not a valid snapshot name for {self.spec}; "
                              f"use a file name starting with {SNAPSHOT_PREFIX}")

    def _is_mount_point(self, path: Path) -> bool:
        # os.path.ismount() cannot tell: every btrfs subvolume has its own st_dev.
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return False
        return str(path) in mount_points(text)

    def _show(self, path: Path) -> SubvolumeInfo:
        return parse_subvolume_show(self._btrfs(["subvolume", "show", str(path)], about=path))

    def _delete(self, path: Path) -> None:
        self._btrfs(["subvolume", "delete", str(path)], about=path)

    def _btrfs(self, args: list[str], *, about: Path) -> str:
        """Run ``btrfs args``, saying what to do for the failures an installer author meets first."""
        try:
            return run(["btrfs", *args])
        except TargetError as err:
            stderr = err.stderr
            if "Not a Btrfs subvolume" in stderr:
                hint = f"{about} is not a btrfs subvolume; create one with: btrfs subvolume create {about}"
            elif "not a btrfs filesystem" in stderr.lower():
                hint = f"{about} is not on a btrfs filesystem; a btrfs: target needs one"
            elif "No such file or directory" in stderr:
                hint = f"{about} does not exist"
            else:
                raise
            raise TargetError(f"{hint} (btrfs {' '.join(args[:2])} failed)", command=err.command,
                              returncode=err.returncode, stderr=stderr) from err
