"""Fixtures of the engine tests: an engine without a target (see tests/conftest.py for the rest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from installengine.statemachine import InstallEngine


@pytest.fixture
def engine(open_engine: Callable[..., InstallEngine]) -> InstallEngine:
    """An engine without a target (volatile log in the test's temp root)."""
    return open_engine()
