"""Fixtures of the fault tests: private temp roots, a fast scratch directory, always-closed engines."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from installengine.statemachine import InstallEngine

from .harness import Reference, build_reference


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every engine of a test keeps its volatile area under the test's own tmp_path."""
    root = tmp_path / "volatile-root"
    root.mkdir()
    monkeypatch.setenv("INSTALLENGINE_TMPDIR", str(root))
    return root


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


@pytest.fixture(scope="session")
def crash_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The crash plan run once, uninterrupted, in a child: states and files at every point."""
    return build_reference(tmp_path_factory.mktemp("crash-reference"))


def require_root_feature(reason: str) -> None:
    """Skip with ``reason``, or fail under CI=true, where every feature must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)
