"""A state directory on a 2 MB tmpfs that really fills up.

The checkpoint that hits ENOSPC fails cleanly (FAILED, and its ErrorInfo says
there is no space left), the log still verifies, and once space is freed the
earlier durable points are still resumable, in the same engine and after a
restart, and resuming from them works.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from installengine.snapshots import materialize
from installengine.statemachine import InstallEngine, Status

from .conftest import require_root_feature
from .steps import register_plan

FILLER_BYTES = 1200 * 1024
NO_SPACE = ("No space left", "disk is full", "disk full")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test, with a filler file to free later; unmounted after."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        require_root_feature(f"cannot mount a tmpfs for the disk-full test: "
                             f"{done.stderr.strip() or done.returncode}")
    try:
        (where / "filler").write_bytes(os.urandom(FILLER_BYTES))
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _growing_plan(count: int, step: int) -> list[tuple[str, str, list[object]]]:
    return [(f"grow-{i:02d}", "grow", [f"k{i:02d}", step * (i + 1)]) for i in range(count)]


def _assert_earlier_points_resumable(engine: InstallEngine, failed: str,
                                     names: list[str]) -> list[str]:
    rec = engine._recorder
    offered = engine.resumable()
    assert offered[: names.index(failed) + 1] == names[: names.index(failed) + 1]
    for decision in rec.decide(engine._registered()):
        if decision.verdict.resumable and decision.point is not None:
            assert decision.point.durable
            materialize(engine.log, rec.lineage, decision.point.seq, rec.store)
    return offered


def test_a_checkpoint_that_fills_the_disk_fails_cleanly_and_earlier_points_survive(
        small_disk: Path) -> None:
    plan = _growing_plan(12, 32 * 1024)
    names = [name for name, _, _ in plan]
    spec = f"dir:{small_disk / 'target'}"
    with InstallEngine(spec) as engine:
        register_plan(engine, plan)
        result = engine.execute()
        assert result.status is Status.FAILED
        assert len(result.failed) == 1
        failed = result.failed[0]
        info = result.errors[failed]
        print(f"{failed} failed: {info.type}: {info.message}")
        assert any(words in info.message for words in NO_SPACE), info.message
        assert "\n" not in info.message
        assert names.index(failed) > 0, "the disk filled before any point was recorded"
        assert engine.log.verify().ok

        (small_disk / "filler").unlink()
        assert engine.log.verify().ok
        _assert_earlier_points_resumable(engine, failed, names)
        index = names.index(failed)
        again = engine.execute(start_from=failed, pause_before=names[index + 1])
        assert again.status is Status.PAUSED, again.errors
        assert len(engine.cache[f"k{index:02d}"]) == 32 * 1024 * (index + 1)

    with InstallEngine(spec) as engine:  # a restart: only durable points count
        register_plan(engine, plan)
        assert engine.log.verify().ok
        offered = _assert_earlier_points_resumable(engine, failed, names)
        assert names[index + 1] in offered
        resumed = engine.execute(start_from=names[index - 1], pause_before=names[index])
        assert resumed.status is Status.PAUSED, resumed.errors
        assert sorted(engine.cache) == [f"k{i:02d}" for i in range(index)]


def test_a_checkpoint_whose_own_write_fills_the_disk_fails_with_enospc(small_disk: Path) -> None:
    plan: list[tuple[str, str, list[object]]] = [
        ("small", "touch", ["small.txt", "x" * 1000]),
        ("huge", "fill", ["huge.bin", 3 * 1024 * 1024]),
        ("after", "put", ["after", True]),
    ]
    spec = f"dir:{small_disk / 'target'}"
    with InstallEngine(spec) as engine:
        register_plan(engine, plan)
        result = engine.execute()
        assert result.status is Status.FAILED
        assert result.failed == ["huge"]
        info = result.errors["huge"]
        assert info.type == "OSError"
        assert "No space left" in info.message
        assert engine.log.verify().ok
        (small_disk / "target" / "huge.bin").unlink(missing_ok=True)
        (small_disk / "filler").unlink()
        assert engine.resumable() == ["small", "huge"]
    with InstallEngine(spec) as engine:
        register_plan(engine, plan)
        assert engine.log.verify().ok
        assert engine.resumable() == ["small", "huge"]
        resumed = engine.execute(start_from="small", pause_before="huge")
        assert resumed.status is Status.PAUSED
        assert engine.cache["small"] == "small.txt"
