"""Fixtures of the engine tests: a private temp root, engines that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from installengine.statemachine import InstallEngine


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every engine of a test keeps its volatile area under the test's own tmp_path."""
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


@pytest.fixture
def engine(open_engine: Callable[..., InstallEngine]) -> InstallEngine:
    """An engine without a target (volatile log in the test's temp root)."""
    return open_engine()
