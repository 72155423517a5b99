"""Install targets and the spec strings that name them."""

from __future__ import annotations

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
