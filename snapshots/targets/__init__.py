"""Install targets and the spec strings that name them."""

from __future__ import annotations

from pathlib import Path

from ..errors import TargetError
from .base import FsSnapshot, Target
from .btrfs import BtrfsTarget
from .directory import DirectoryTarget
from .state import StateDir
from .zfs import ZfsTarget

SCHEMES = "zfs:pool/dataset, btrfs:/path, dir:/path or state:/path"


def target_from_spec(spec: str | Target) -> Target:
    """Build a target from its spec string (``dir:/mnt/install``); a Target passes through.

    :raises TargetError: for an unknown scheme or an empty location.
    """
    if isinstance(spec, Target):
        return spec
    scheme, sep, where = str(spec).partition(":")
    if not sep or not where:
        raise TargetError(f"target {spec!r} has no scheme; write it as {SCHEMES}")
    if scheme == "dir":
        return DirectoryTarget(Path(where).expanduser())
    if scheme == "state":
        return StateDir(Path(where).expanduser())
    if scheme == "zfs":
        return ZfsTarget(where)
    if scheme == "btrfs":
        return BtrfsTarget(Path(where).expanduser())
    raise TargetError(f"target {spec!r} has unknown scheme {scheme!r}; write it as {SCHEMES}")


__all__ = ["BtrfsTarget", "DirectoryTarget", "FsSnapshot", "StateDir", "Target", "ZfsTarget",
           "target_from_spec"]
