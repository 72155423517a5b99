"""Fixtures of the fault tests: a fast scratch directory and the uninterrupted crash reference."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Reference, build_reference


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory for many short-lived targets: on tmpfs (/dev/shm) when there is one.

    ``INSTALLENGINE_FAULTS_WORKDIR`` picks another parent, e.g. a real disk.
    A SIGKILL loses nothing the kernel holds, so tmpfs changes no outcome, only the time.
    """
    parent = os.environ.get("INSTALLENGINE_FAULTS_WORKDIR")
    if parent is None and os.access("/dev/shm", os.W_OK):
        parent = "/dev/shm"
    if parent is None:
        yield tmp_path
        return
    where = Path(tempfile.mkdtemp(prefix="installengine-faults-", dir=parent))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="session")
def crash_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The crash plan run once, uninterrupted, in a child: states and files at every point."""
    return build_reference(tmp_path_factory.mktemp("crash-reference"))


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}  # as tests/conftest.py reads it


def require_root_feature(reason: str) -> None:
    """Skip with ``reason``, or fail under CI=true, where every feature must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)
