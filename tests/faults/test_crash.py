"""SIGKILL the engine at random moments: no completion is lost and no resume is unsafe.

See ``harness.py`` for how a trial runs and what it checks. The crash bench
(``bench/crash.py``) runs the same trials a thousand times.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from installengine.eventlog import EventLog

from .conftest import require_root_feature
from .harness import (
    Reference,
    Stats,
    destroy_zfs,
    dir_spec,
    run_targeted_trial,
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


@pytest.mark.parametrize(("site", "nth", "moment"), [
    # killed with its transaction open: what matters is that none of it is kept
    *[("log-commit", n, None) for n in (1, 6, 15)],
    *[("snapshot-file-write", n, "snapshot-file write") for n in (1, 2)],
    *[("filesystem-snapshot", n, "filesystem snapshot") for n in (1, 4, 9)]])
def test_sigkill_inside_a_log_transaction_a_snapshot_file_write_or_a_filesystem_snapshot(
        reference: Reference, scratch: Path, site: str, nth: int, moment: str | None) -> None:
    stats = Stats()
    seen, child = run_targeted_trial(site, nth, scratch / f"{site}-{nth}", reference, stats,
                                     make_spec=dir_spec)
    assert stats.kills == 1, stats.other
    if site == "log-commit":
        # The transaction was open: none of its events may be in the log afterwards.
        (pending,) = [line.split() for line in child.lines if line.startswith("pending ")]
        first = int(pending[1])
        with EventLog.open(scratch / f"{site}-{nth}" / "target" / ".installengine" / "log.db",
                           readonly=True) as log:
            kept = [ev.session for ev in log.query() if ev.seq >= first]
        assert kept, "the trial resumed, so later sessions appended from that seq on"
        (killed,) = [line.split()[1] for line in child.lines if line.startswith("session ")]
        assert killed not in kept, "an event of the killed transaction was kept"
    else:
        assert seen == moment
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
