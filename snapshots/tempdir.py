"""The per-session temporary area that holds the log and snapshots without a target.

Each area is ``<tmp>/installengine-<uid>/<session-id>/`` with mode 0700, and
records its session so that ``gc`` can tell areas of dead processes from live
ones. Nothing in it is ever an official resume source after a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import orjson
from installengine.eventlog import SessionInfo

from .errors import TargetError
from .targets.base import make_private_dir

SESSION_FILE = "session.json"


def temp_root() -> Path:
    """The parent of all session areas, read from ``$INSTALLENGINE_TMPDIR`` when the engine opens."""
    base = Path(os.environ.get("INSTALLENGINE_TMPDIR") or tempfile.gettempdir())
    return base / f"installengine-{os.getuid()}"


def create_area(session: SessionInfo) -> Path:
    """Create this session's 0700 area and record the session in it.

    :raises TargetError: when the area or its parent is a symlink or not ours.
    """
    root = temp_root()
    make_private_dir(root)
    area = root / session.id
    if area.exists() or area.is_symlink():
        raise TargetError(f"temporary area {area} already exists; run installengine gc")
    make_private_dir(area)
    fd = os.open(area / SESSION_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(session.as_json()))
    return area


def remove_area(area: Path) -> None:
    shutil.rmtree(area, ignore_errors=True)


def gc(*, dry_run: bool = False) -> list[Path]:
    """Remove the areas of sessions whose process is gone; return what was (or would be) removed."""
    root = temp_root()
    if not root.is_dir() or root.is_symlink():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        try:
            info = SessionInfo.from_json(orjson.loads((entry / SESSION_FILE).read_bytes()))
        except (OSError, orjson.JSONDecodeError, KeyError, ValueError):
            info = None  # an area with no readable record cannot belong to a live session
        if info is not None and info.is_alive():
            continue
        removed.append(entry)
        if not dry_run:
            shutil.rmtree(entry, ignore_errors=True)
    return removed
