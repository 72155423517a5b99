"""Install targets and the spec strings that name them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TargetError
from .base import FsSnapshot, Target
from .directory import DirectoryTarget
from .state import StateDir

if TYPE_CHECKING:
    from .btrfs import BtrfsTarget
    from .zfs import ZfsTarget

SCHEMES = "zfs:pool/dataset, btrfs:/path, dir:/path or state:/path"


def _check_path_length(spec: str | Target, where: str) -> None:
    """Refuse a path no filesystem here can hold, with the spec, before anything touches it."""
    too_long = [part for part in where.split("/") if len(os.fsencode(part)) > 255]
    if too_long or len(os.fsencode(where)) >= 4096:
        what = (f"a name of {len(os.fsencode(too_long[0]))} bytes (at most 255)" if too_long
                else f"{len(os.fsencode(where))} bytes (at most 4095)")
        raise TargetError(f"target {str(spec)[:60]}... has a path too long: {what}; pick a "
                          "shorter path")


def target_from_spec(spec: str | Target) -> Target:
    """Build a target from its spec string (``dir:/mnt/install``); a Target passes through.

    :raises TargetError: for an unknown scheme or an empty location.
    """
    if isinstance(spec, Target):
        return spec
    scheme, sep, where = str(spec).partition(":")
    if not sep:
        raise TargetError(f"target {spec!r} has no scheme; write it as {SCHEMES}")
    if not where:
        raise TargetError(f"target {spec!r} names no location after {scheme}:; write it as "
                          f"{SCHEMES}")
    if scheme in ("dir", "state", "btrfs"):
        _check_path_length(spec, where)
    if scheme == "dir":
        return DirectoryTarget(Path(where).expanduser())
    if scheme == "state":
        return StateDir(Path(where).expanduser())
    if scheme == "zfs":
        from .zfs import ZfsTarget

        return ZfsTarget(where)
    if scheme == "btrfs":
        from .btrfs import BtrfsTarget

        return BtrfsTarget(Path(where).expanduser())
    raise TargetError(f"target {spec!r} has unknown scheme {scheme!r}; write it as {SCHEMES}")


def __getattr__(name: str) -> Any:
    """ZfsTarget and BtrfsTarget load on first use: most installs need neither."""
    if name == "ZfsTarget":
        from .zfs import ZfsTarget

        return ZfsTarget
    if name == "BtrfsTarget":
        from .btrfs import BtrfsTarget

        return BtrfsTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BtrfsTarget", "DirectoryTarget", "FsSnapshot", "StateDir", "Target", "ZfsTarget",
           "target_from_spec"]
