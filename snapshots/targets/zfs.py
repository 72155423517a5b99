"""``zfs:pool/dataset``: a ZFS dataset, snapshotted and rolled back with the ``zfs`` command.

The state directory is the mountpoint of a child dataset,
``<dataset>/.installengine``. A snapshot of a dataset never contains its
children and ``zfs rollback`` never touches them, so the log survives every
rollback of the install without any special handling.

All properties are read with ``zfs get -H -p -o name,property,value``: it is the
one machine-readable form that both OpenZFS and zfs-fuse accept (zfs-fuse's
``zfs list`` has no ``-p`` and prints a guid as ``14.3E``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import TargetError
from .base import SNAPSHOT_PREFIX, FsSnapshot, Target, make_private_dir
from .command import run

logger = logging.getLogger(__name__)

STATE_DATASET = ".installengine"

#: the properties one ``zfs get`` call reads for the dataset, its children and its snapshots
PROPERTIES = ("type", "createtxg", "guid", "mountpoint", "mounted")

# The characters ZFS allows in a dataset or snapshot name component.
_COMPONENT = re.compile(r"^[A-Za-z0-9_.:-]+$")

Properties = dict[str, dict[str, str]]


def parse_zfs_get(text: str) -> Properties:
    """Parse ``zfs get -H -p -o name,property,value`` output into ``{name: {property: value}}``.

    Names keep the order zfs printed them in. The value is the last field
    and may contain spaces (``creation``), never tabs.

    :raises TargetError: on a line that does not have three tab-separated fields.
    """
    found: Properties = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise TargetError(f"cannot parse zfs get output line {line!r}: expected name, property, value")
        name, prop, value = fields
        found.setdefault(name, {})[prop] = value
    return found


def snapshots_of(dataset: str, props: Properties) -> list[FsSnapshot]:
    """The installengine snapshots of ``dataset`` in ``props``, oldest first.

    Only the dataset's own snapshots (not its children's) whose name starts with
    ``SNAPSHOT_PREFIX`` count. ``createtxg`` orders them: ``creation`` has only
    one-second resolution, and every ``zfs snapshot`` call syncs its own txg.

    :raises TargetError: when a snapshot lacks its guid or createtxg.
    """
    found: list[tuple[int, FsSnapshot]] = []
    for name, values in props.items():
        ds, sep, snap = name.partition("@")
        if not sep or ds != dataset or not snap.startswith(SNAPSHOT_PREFIX):
            continue
        try:
            txg = int(values["createtxg"])
            guid = values["guid"]
        except (KeyError, ValueError) as err:
            raise TargetError(f"zfs reported snapshot {name} without a usable guid and createtxg: "
                              f"{values}") from err
        found.append((txg, FsSnapshot(snap, guid)))
    found.sort(key=lambda pair: pair[0])  # stable: zfs's own order breaks ties
    return [snap for _, snap in found]


def all_snapshot_names(dataset: str, props: Properties) -> list[str]:
    """Every snapshot name of ``dataset`` itself, installengine's or not, in createtxg order."""
    found: list[tuple[int, str]] = []
    for name, values in props.items():
        ds, sep, snap = name.partition("@")
        if sep and ds == dataset:
            found.append((int(values.get("createtxg", "0")), snap))
    found.sort(key=lambda pair: pair[0])
    return [snap for _, snap in found]


def check_dataset_name(dataset: str) -> None:
    """Refuse a dataset name zfs would refuse, before any tool runs.

    :raises TargetError: naming the bad name and what a good one looks like.
    """
    parts = dataset.split("/")
    if not dataset or "@" in dataset or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise TargetError(f"{dataset!r} is not a ZFS dataset name; write it as pool/dataset "
                          "(letters, digits and _ . : - separated by /)")


class ZfsTarget(Target):
    """A ZFS dataset, snapshotted with ``zfs snapshot`` and rolled back with ``zfs rollback -r``.

    The dataset must exist (creating one involves choices, such as pool and
    properties, that belong to the installer); ``prepare()`` mounts it if needed
    and creates the state dataset.
    """

    scheme = "zfs"
    takes_fs_snapshots = True

    def __init__(self, dataset: str) -> None:
        dataset = dataset.strip("/")
        check_dataset_name(dataset)
        self.dataset = dataset
        self._root: Path | None = None
        self._state_dir: Path | None = None

    @property
    def state_dataset(self) -> str:
        """The child dataset whose mountpoint is the state directory."""
        return f"{self.dataset}/{STATE_DATASET}"

    @property
    def root(self) -> Path:
        """The dataset's mountpoint (read once from zfs).

        :raises TargetError: when zfs fails, the dataset is missing or has no mountpoint.
        """
        if self._root is None:
            props = self._read([self.dataset], depth=None)
            self._root = self._mountpoint(self.dataset, props)
        return self._root

    @property
    def state_dir(self) -> Path:
        """The state dataset's mountpoint; before ``prepare()`` creates it, where it will inherit one.

        :raises TargetError: when zfs fails or the dataset is missing.
        """
        if self._state_dir is not None:
            return self._state_dir
        props = self._read([self.dataset], depth=1)
        self._root = self._mountpoint(self.dataset, props)
        if self.state_dataset in props:
            self._state_dir = self._mountpoint(self.state_dataset, props)
            return self._state_dir
        return self._root / STATE_DATASET

    @property
    def spec(self) -> str:
        return f"zfs:{self.dataset}"

    def exists(self) -> bool:
        """Whether the dataset exists.

        :raises TargetError: when zfs itself cannot run (not installed, daemon down).
        """
        try:
            props = self._read([self.dataset], depth=None)
        except TargetError as err:
            if "does not exist" in err.stderr:
                return False
            raise
        return props.get(self.dataset, {}).get("type") == "filesystem"

    def prepare(self) -> None:
        """Mount the dataset if needed and create the state dataset (mode 0700) when missing.

        :raises TargetError: when the dataset is missing, is not a mountable filesystem, or zfs fails.
        """
        props = self._read([self.dataset], depth=1)
        kind = props.get(self.dataset, {}).get("type")
        if kind != "filesystem":
            raise TargetError(f"ZFS dataset {self.dataset} is a {kind}, not a filesystem; "
                              "a zfs: target needs a filesystem dataset")
        self._ensure_mounted(self.dataset, props)
        if self.state_dataset not in props:
            # canmount=on and an inherited mountpoint: the state sits at <root>/.installengine.
            self._zfs(["create", self.state_dataset])
            props = self._read([self.dataset], depth=1)
        self._ensure_mounted(self.state_dataset, props)
        self._root = self._mountpoint(self.dataset, props)
        self._state_dir = self._mountpoint(self.state_dataset, props)
        make_private_dir(self._state_dir)

    def snapshot(self, name: str) -> FsSnapshot:
        """Take ``dataset@name``, destroying an older snapshot of that name first.

        :raises TargetError: when the name is not a valid snapshot name, the dataset is missing or
            zfs fails.
        """
        self._check_snapshot_name(name)
        full = f"{self.dataset}@{name}"
        if full in self._read([self.dataset], depth=1):
            self._zfs(["destroy", full])
        self._zfs(["snapshot", full])
        guid = self._read([full], depth=None).get(full, {}).get("guid")
        if not guid:
            raise TargetError(f"zfs created {full} but reported no guid for it; check: zfs get guid {full}")
        return FsSnapshot(name, guid)

    def list_snapshots(self) -> list[FsSnapshot]:
        """The dataset's own ``.step_`` snapshots in creation order; id = guid.

        :raises TargetError: when the dataset is missing or zfs fails.
        """
        return snapshots_of(self.dataset, self._read([self.dataset], depth=1))

    def rollback(self, name: str) -> list[str]:
        """Roll the dataset back to ``name`` with ``zfs rollback -r``; return the later snapshots destroyed.

        ``-r`` destroys every later snapshot of the dataset, also ones that are
        not installengine's; those are logged, but only installengine's names
        (as ``list_snapshots()`` gives them) are returned. The state dataset is
        a child, so it is left as it is.

        :raises TargetError: when ``name`` is not one of this target's snapshots or zfs fails.
        """
        before = self._read([self.dataset], depth=1)
        ours = [s.name for s in snapshots_of(self.dataset, before)]
        if name not in ours:
            raise TargetError(f"cannot roll {self.spec} back: snapshot {name!r} does not exist; "
                              f"it has {', '.join(ours) or 'no installengine snapshots'}")
        everything = all_snapshot_names(self.dataset, before)
        self._zfs(["rollback", "-r", f"{self.dataset}@{name}"])
        after = set(all_snapshot_names(self.dataset, self._read([self.dataset], depth=1)))
        destroyed = [n for n in everything if n not in after]
        foreign = [n for n in destroyed if not n.startswith(SNAPSHOT_PREFIX)]
        if foreign:
            logger.warning("rolling %s back to %s also destroyed snapshots %s", self.spec, name,
                           ", ".join(foreign))
        return [n for n in destroyed if n.startswith(SNAPSHOT_PREFIX)]

    def destroy_snapshot(self, name: str) -> None:
        """Destroy ``dataset@name``; a missing snapshot is not an error.

        :raises TargetError: when the name is invalid, the dataset is missing or zfs fails.
        """
        self._check_snapshot_name(name)
        full = f"{self.dataset}@{name}"
        # Look first: zfs words a missing snapshot and a missing dataset alike.
        if full in self._read([self.dataset], depth=1):
            self._zfs(["destroy", full])

    def _check_snapshot_name(self, name: str) -> None:
        if not _COMPONENT.fullmatch(name):
            raise TargetError(f"{name!r} is not a valid ZFS snapshot name; use letters, digits and _ . : -")

    def _ensure_mounted(self, dataset: str, props: Properties) -> None:
        # zfs-fuse imports pools from its cache at start without mounting them.
        self._mountpoint(dataset, props)
        if props[dataset].get("mounted") != "yes":
            self._zfs(["mount", dataset])

    def _mountpoint(self, dataset: str, props: Properties) -> Path:
        values = props.get(dataset)
        if values is None:
            raise TargetError(f"zfs did not report dataset {dataset}; check it with: zfs list {dataset}")
        mountpoint = values.get("mountpoint", "")
        if not mountpoint.startswith("/"):
            raise TargetError(f"ZFS dataset {dataset} has mountpoint={mountpoint or 'unset'}; give it one "
                              f"with: zfs set mountpoint=/path {dataset}")
        return Path(mountpoint)

    def _read(self, names: list[str], *, depth: int | None) -> Properties:
        """Read PROPERTIES of ``names`` (and, with ``depth``, their children and snapshots)."""
        command = ["get", "-H", "-p"]
        if depth is not None:
            command += ["-r", "-d", str(depth)]
        command += ["-o", "name,property,value", ",".join(PROPERTIES), *names]
        return parse_zfs_get(self._zfs(command))

    def _zfs(self, args: list[str]) -> str:
        """Run ``zfs args``, turning its two common failures into messages that say what to do."""
        try:
            return run(["zfs", *args])
        except TargetError as err:
            raise _explain(err, self.dataset) from err


def _explain(err: TargetError, dataset: str) -> TargetError:
    """A one-line message for the zfs failures an installer author will meet first."""
    stderr = err.stderr
    if "zfs-fuse daemon is running" in stderr or "failed to initialize ZFS library" in stderr:
        message = ("zfs cannot reach the ZFS service (" + (stderr.splitlines()[0] if stderr else "")
                   + "); start it (zfs-fuse, or load the zfs module) and retry")
    elif "dataset does not exist" in stderr and f"'{dataset}'" in stderr:
        message = (f"ZFS dataset {dataset} does not exist; create it with: zfs create {dataset} "
                   "(or fix the zfs: target spec)")
    else:
        return err
    return TargetError(message, command=err.command, returncode=err.returncode, stderr=stderr)
