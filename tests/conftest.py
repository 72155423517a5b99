"""Suite-wide test setup: the zfs/btrfs markers, their fixtures, the hypothesis profiles,
a private temporary root for every test's volatile areas, and always-closed engines.

A test marked ``zfs`` or ``btrfs`` needs what ``scripts/sandbox up`` provides.
Without it the test is skipped, naming what is missing; under ``CI=true`` it
fails instead, so that CI can never pass by silently skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from installengine.statemachine import InstallEngine

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "default"))

ZFS_ENV = "INSTALLENGINE_TEST_ZFS_POOL"
BTRFS_ENV = "INSTALLENGINE_TEST_BTRFS"
SANDBOX_HINT = 'run eval "$(sudo scripts/sandbox up)" first'

#: marker -> (environment variable, tools it needs)
REQUIREMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "zfs": (ZFS_ENV, ("zfs", "zpool")),
    "btrfs": (BTRFS_ENV, ("btrfs",)),
}


def _missing(marker: str) -> str | None:
    """Why a ``marker`` test cannot run here, or None when it can."""
    env, tools = REQUIREMENTS[marker]
    if not os.environ.get(env):
        return f"{env} is not set; {SANDBOX_HINT}"
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        return f"{', '.join(absent)} not installed; {SANDBOX_HINT}"
    return None


def _require(marker: str) -> str:
    """The environment value for ``marker``; skip (or fail under CI) when it is missing."""
    reason = _missing(marker)
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{marker} test cannot run under CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return os.environ[REQUIREMENTS[marker][0]]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in REQUIREMENTS:
        if item.get_closest_marker(marker) is not None:
            _require(marker)


def _sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture
def zfs_dataset() -> Iterator[str]:
    """A fresh, empty dataset under the test pool; destroyed with its children and snapshots after."""
    pool = _require("zfs")
    name = f"{pool}/t{uuid.uuid4().hex[:10]}"
    _sh("zfs", "create", name)
    try:
        yield name
    finally:
        _destroy_dataset(name)


def _destroy_dataset(name: str, attempts: int = 20) -> None:
    """``zfs destroy -r``, after unmounting deepest first: zfs-fuse calls mounted datasets busy.

    zfs-fuse also calls a dataset busy for a moment after the last command
    that touched it returned, so a refused destroy is retried for a few seconds
    before the teardown fails with what zfs said.
    """
    failed = ""
    for _ in range(attempts):
        listed = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-r", name],
                                capture_output=True, text=True, check=True)
        for dataset in sorted(listed.stdout.split(), reverse=True):
            subprocess.run(["zfs", "unmount", dataset], capture_output=True, check=False)
        done = subprocess.run(["zfs", "destroy", "-r", name], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        failed = done.stderr.strip()
        time.sleep(0.25)
    raise RuntimeError(f"zfs destroy -r {name} failed {attempts} times: {failed}")


def _delete_subvolumes(path: Path) -> None:
    """Delete every subvolume at or below ``path``, innermost first, then whatever plain files are left."""
    if not path.exists():
        return
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        where = Path(dirpath)
        if where.is_dir() and not where.is_symlink() and where.stat().st_ino == 256:
            _sh("btrfs", "subvolume", "delete", str(where))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def btrfs_subvolume() -> Iterator[Path]:
    """A fresh subvolume on the test btrfs; deleted after with nested subvolumes and its snapshots."""
    base = Path(_require("btrfs"))
    path = base / f"t{uuid.uuid4().hex[:10]}"
    _sh("btrfs", "subvolume", "create", str(path))
    try:
        yield path
    finally:
        # BtrfsTarget keeps its snapshots beside the subvolume, in .<name>.snapshots.
        for leftover in (path, base / f".{path.name}.snapshots"):
            _delete_subvolumes(leftover)


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Volatile areas of every test (and of its child processes) stay under its tmp_path."""
    root = tmp_path / "volatile-root"
    root.mkdir()
    monkeypatch.setenv("INSTALLENGINE_TMPDIR", str(root))
    return root


@pytest.fixture
def open_engine() -> Iterator[Callable[..., InstallEngine]]:
    """A factory of engines; each is closed after the test even when it fails."""
    opened: list[InstallEngine] = []

    def make(*args: Any, **kwargs: Any) -> InstallEngine:
        engine = InstallEngine(*args, **kwargs)
        opened.append(engine)
        return engine

    yield make
    for engine in reversed(opened):
        engine.close()
