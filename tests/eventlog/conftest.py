"""Fixtures shared by the event log tests: fresh log paths under tmp_path."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from installengine.eventlog import EventLog


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where a test's log lives; the file does not exist yet."""
    return tmp_path / "state" / "log.db"


@pytest.fixture
def new_log_path(tmp_path: Path) -> Callable[[], Path]:
    """A factory of distinct, not yet existing log paths.

    Hypothesis runs many examples inside one test function, so each example asks
    for its own file instead of sharing the function-scoped ``tmp_path``.
    """
    counter = itertools.count()

    def make() -> Path:
        directory = tmp_path / f"example-{next(counter)}"
        directory.mkdir()
        return directory / "log.db"

    return make


@pytest.fixture
def log(log_path: Path) -> Iterator[EventLog]:
    """A new, volatile (non-fsyncing) log, closed after the test."""
    with EventLog.open(log_path, durable=False) as opened:
        yield opened
