"""SIGKILL the engine at random moments: no completion is lost and no resume is unsafe.

See ``harness.py`` for how a trial runs and what it checks. The crash bench
(``bench/crash.py``) runs the same trials a thousand times.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .conftest import require_root_feature
from .harness import (
    Reference,
    Stats,
    destroy_zfs,
    dir_spec,
    run_trials,
    zfs_ready,
    zfs_spec_for,
)
from .steps import NAMES

MIN_KILLS = 50


@pytest.fixture
def reference(crash_reference: Reference) -> Reference:
    return crash_reference


def _assert_clean(stats: Stats) -> None:
    assert stats.unsafe == [], "unsafe offers"
    assert stats.lost == [], "lost completions"
    assert stats.unequal == [], "runs that did not end equal"
    assert stats.other == []
    assert stats.runs_equal == stats.trials


def test_reference_run_records_every_point(reference: Reference) -> None:
    assert set(reference.states) == {(n, w) for n in NAMES for w in ("before", "completed")}
    assert reference.final_state["counter"] == 1111
    assert reference.final_tree["etc/hostname.orig"][1] == 0o640


def test_sigkill_at_random_moments_loses_no_completion_and_offers_only_safe_resumes(
        reference: Reference, scratch: Path) -> None:
    began = time.monotonic()
    stats = run_trials(scratch, reference, make_spec=dir_spec, min_kills=MIN_KILLS, jobs=2)
    elapsed = time.monotonic() - began
    print(f"{stats.trials} trials, {stats.kills} kills, {stats.offers_checked} offers checked, "
          f"{stats.resumes_checked} resumes, {elapsed:.0f} s; kill moments: {dict(stats.moments)}")
    assert stats.kills >= MIN_KILLS
    _assert_clean(stats)


@pytest.mark.zfs
def test_sigkill_on_a_zfs_target(reference: Reference, scratch: Path) -> None:
    pool = os.environ.get("INSTALLENGINE_TEST_ZFS_POOL")
    if not pool:
        require_root_feature("INSTALLENGINE_TEST_ZFS_POOL is not set (zfs-fuse pool for the zfs target)")
        return
    why = zfs_ready(pool)
    if why is not None:
        require_root_feature(why)
        return
    stats = run_trials(scratch, reference, make_spec=zfs_spec_for(pool), min_kills=20,
                       cleanup=destroy_zfs)
    _assert_clean(stats)
