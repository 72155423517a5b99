"""The contract every install target must honour, written once and run against each target.

A test module subclasses ``SnapshotTargetContract`` (targets that snapshot
their filesystem) or ``StateOnlyTargetContract`` (targets that do not), both
``TargetContract``s, and implements ``make_target(tmp_path)``. The class names
do not start with ``Test``, so pytest collects them only through a subclass.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from installengine.snapshots import Target, target_from_spec
from installengine.snapshots.errors import TargetError, TargetLockedError
from installengine.snapshots.targets.lock import TargetLock

Tree = dict[str, tuple[str, str, int]]


def tree(root: Path, *, skip: Path) -> Tree:
    """Every entry below ``root`` except ``skip`` (the state dir): kind, content or link, mode."""
    found: Tree = {}
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in [*dirs, *files]:
            path = here / name
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path), 0)
            elif path.is_dir():
                found[rel] = ("dir", "", mode)
            else:
                found[rel] = ("file", path.read_text(), mode)
    return found


def populate(root: Path) -> None:
    """The install as it stands at the snapshot: files, a subdirectory, a symlink, a private file."""
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("before\n")
    (root / "keep.txt").write_text("unchanged\n")
    (root / "deleted-later.txt").write_text("comes back\n")
    (root / "secret").write_text("0600\n")
    (root / "secret").chmod(0o600)
    (root / "link").symlink_to("etc/hostname")


def change(root: Path) -> None:
    """What a checkpoint after the snapshot does: change, add, delete, add a directory."""
    (root / "etc" / "hostname").write_text("after\n")
    (root / "added.txt").write_text("must disappear\n")
    (root / "deleted-later.txt").unlink()
    (root / "newdir").mkdir()
    (root / "newdir" / "inner").write_text("must disappear too\n")
    (root / "secret").chmod(0o644)


class TargetContract:
    """What every target does: a private, durable state directory and a spec that recreates it."""

    def make_target(self, tmp_path: Path) -> Target:
        """Return a fresh, not yet prepared target; subclasses implement this."""
        raise NotImplementedError

    @pytest.fixture
    def fresh(self, tmp_path: Path) -> Target:
        return self.make_target(tmp_path)

    @pytest.fixture
    def target(self, fresh: Target) -> Target:
        fresh.prepare()
        return fresh

    def test_prepare_creates_a_private_state_dir(self, fresh: Target) -> None:
        fresh.prepare()
        assert fresh.exists()
        assert fresh.state_dir.is_dir()
        assert stat.S_IMODE(fresh.state_dir.stat().st_mode) == 0o700

    def test_prepare_again_keeps_the_state(self, target: Target) -> None:
        (target.state_dir / "log.db").write_text("events")
        target.prepare()
        assert (target.state_dir / "log.db").read_text() == "events"

    def test_root_is_writable_after_prepare(self, target: Target) -> None:
        (target.root / "file").write_text("x")
        assert (target.root / "file").read_text() == "x"

    def test_spec_recreates_the_same_target(self, target: Target) -> None:
        again = target_from_spec(target.spec)
        assert type(again) is type(target)
        assert (again.spec, again.root, again.state_dir) == (target.spec, target.root, target.state_dir)
        assert target.describe()["spec"] == target.spec


class SnapshotTargetContract(TargetContract):
    """What a target that snapshots its filesystem does, on top of the TargetContract."""

    def test_takes_fs_snapshots(self, target: Target) -> None:
        assert target.takes_fs_snapshots

    def test_no_snapshots_before_the_first(self, target: Target) -> None:
        assert target.list_snapshots() == []

    def test_snapshots_are_listed_in_creation_order_with_ids(self, target: Target) -> None:
        names = [".step_partition.done", ".step_configure.before", ".step_base.before"]
        taken = [target.snapshot(n) for n in names]
        assert target.list_snapshots() == taken
        assert [s.name for s in taken] == names
        assert all(s.id for s in taken)
        assert len({s.id for s in taken}) == len(taken)

    def test_retaking_a_snapshot_gives_a_new_id_and_moves_it_last(self, target: Target) -> None:
        first = target.snapshot(".step_a.before")
        other = target.snapshot(".step_b.before")
        (target.root / "f").write_text("later")
        again = target.snapshot(".step_a.before")
        assert again.name == first.name
        assert again.id != first.id
        assert target.list_snapshots() == [other, again]

    def test_rollback_restores_the_files(self, target: Target) -> None:
        populate(target.root)
        expected = tree(target.root, skip=target.state_dir)
        target.snapshot(".step_configure.before")
        change(target.root)
        assert tree(target.root, skip=target.state_dir) != expected
        assert target.rollback(".step_configure.before") == []
        assert tree(target.root, skip=target.state_dir) == expected

    def test_rollback_destroys_and_returns_the_later_snapshots(self, target: Target) -> None:
        (target.root / "step").write_text("a")
        first = target.snapshot(".step_a.before")
        (target.root / "step").write_text("b")
        target.snapshot(".step_b.before")
        (target.root / "step").write_text("c")
        target.snapshot(".step_c.before")
        assert target.rollback(".step_a.before") == [".step_b.before", ".step_c.before"]
        assert target.list_snapshots() == [first]
        assert (target.root / "step").read_text() == "a"

    def test_rollback_twice_to_the_same_snapshot(self, target: Target) -> None:
        (target.root / "step").write_text("a")
        target.snapshot(".step_a.before")
        for attempt in ("first", "second"):
            (target.root / "step").write_text(attempt)
            (target.root / attempt).write_text("x")
            target.rollback(".step_a.before")
            assert (target.root / "step").read_text() == "a"
            assert not (target.root / attempt).exists()

    def test_state_dir_is_untouched_by_snapshot_and_rollback(self, target: Target) -> None:
        (target.state_dir / "log.db").write_text("written before the snapshot")
        target.snapshot(".step_a.before")
        (target.state_dir / "log.db").write_text("written after the snapshot")
        (target.state_dir / "snapshot-7.json").write_text("{}")
        target.rollback(".step_a.before")
        assert (target.state_dir / "log.db").read_text() == "written after the snapshot"
        assert (target.state_dir / "snapshot-7.json").read_text() == "{}"
        assert stat.S_IMODE(target.state_dir.stat().st_mode) == 0o700

    def test_lock_in_state_dir_survives_a_rollback(self, target: Target) -> None:
        target.snapshot(".step_a.before")
        with TargetLock(target.state_dir, {"pid": os.getpid(), "host": "here"}):
            target.rollback(".step_a.before")
            with pytest.raises(TargetLockedError):
                TargetLock(target.state_dir, {"pid": 0, "host": "other"}).acquire()
        with TargetLock(target.state_dir, {"pid": os.getpid(), "host": "here"}) as lock:
            assert lock.taken_over_from is None  # closed cleanly, through the same file

    def test_destroy_snapshot_and_missing_is_not_an_error(self, target: Target) -> None:
        target.snapshot(".step_a.before")
        kept = target.snapshot(".step_b.before")
        target.destroy_snapshot(".step_a.before")
        assert target.list_snapshots() == [kept]
        target.destroy_snapshot(".step_a.before")
        target.destroy_snapshot(".step_never.before")
        assert target.list_snapshots() == [kept]

    def test_rollback_to_a_missing_snapshot_raises_and_changes_nothing(self, target: Target) -> None:
        (target.root / "f").write_text("one")
        kept = target.snapshot(".step_a.before")
        (target.root / "f").write_text("two")
        with pytest.raises(TargetError, match=r"\.step_gone\.before"):
            target.rollback(".step_gone.before")
        assert (target.root / "f").read_text() == "two"
        assert target.list_snapshots() == [kept]


class StateOnlyTargetContract(TargetContract):
    """What a target without filesystem snapshots does: it refuses them, clearly."""

    def test_takes_no_fs_snapshots(self, target: Target) -> None:
        assert not target.takes_fs_snapshots
        assert target.list_snapshots() == []

    def test_snapshot_and_rollback_raise_target_error(self, target: Target) -> None:
        with pytest.raises(TargetError, match="takes no filesystem snapshots"):
            target.snapshot(".step_a.before")
        with pytest.raises(TargetError, match="takes no filesystem snapshots"):
            target.rollback(".step_a.before")

    def test_destroy_snapshot_is_a_no_op(self, target: Target) -> None:
        target.destroy_snapshot(".step_a.before")
        assert target.list_snapshots() == []
