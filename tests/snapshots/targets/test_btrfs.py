"""BtrfsTarget: the target contract on a real loop-mounted btrfs, crash recovery, errors and parsers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from installengine.snapshots import BtrfsTarget
from installengine.snapshots.errors import TargetError
from installengine.snapshots.targets.base import FsSnapshot
from installengine.snapshots.targets.btrfs import (
    SubvolumeInfo,
    _exchange,
    mount_points,
    order_snapshots,
    parse_subvolume_list,
    parse_subvolume_show,
)

from .contract import SnapshotTargetContract

# Captured from btrfs-progs v6.2 (Debian 12): btrfs subvolume show of a read-only snapshot ...
SHOW_SNAPSHOT = """\
.sv.snapshots/.step_a.before
\tName: \t\t\t.step_a.before
\tUUID: \t\t\t7a5ef4f1-289d-c240-b6ab-18ce77c7121c
\tParent UUID: \t\t46ccc9b5-1887-6d44-b956-f3c075e865b8
\tReceived UUID: \t\t-
\tCreation time: \t\t2026-12-02 00:43:30 +0000
\tSubvolume ID: \t\t258
\tGeneration: \t\t7
\tGen at creation: \t7
\tParent ID: \t\t5
\tTop level ID: \t\t5
\tFlags: \t\t\treadonly
\tSend transid: \t\t0
\tSend time: \t\t2026-12-02 00:43:30 +0000
\tReceive transid: \t0
\tReceive time: \t\t-
\tSnapshot(s):
"""

# ... of the subvolume it was taken from (its snapshots listed below it) ...
SHOW_SUBVOLUME = """\
sv
\tName: \t\t\tsv
\tUUID: \t\t\t46ccc9b5-1887-6d44-b956-f3c075e865b8
\tParent UUID: \t\t-
\tReceived UUID: \t\t-
\tCreation time: \t\t2026-12-02 00:43:30 +0000
\tSubvolume ID: \t\t256
\tGeneration: \t\t8
\tGen at creation: \t7
\tParent ID: \t\t5
\tTop level ID: \t\t5
\tFlags: \t\t\t-
\tSend transid: \t\t0
\tSend time: \t\t2026-12-02 00:43:30 +0000
\tReceive transid: \t0
\tReceive time: \t\t-
\tSnapshot(s):
\t\t\t\t.sv.snapshots/.step_a.before
\t\t\t\t.sv.snapshots/.step_b.before
"""

# ... and btrfs subvolume list in two of its column sets (-o sv; -s -u -q over the whole fs).
LIST_NESTED = "ID 257 gen 10 top level 260 path sv/.installengine\n"
LIST_SNAPSHOTS = """\
ID 258 gen 7 cgen 7 top level 5 otime 2026-12-02 00:43:30 parent_uuid 46ccc9b5-1887-6d44-b956-f3c075e865b8 \
uuid 7a5ef4f1-289d-c240-b6ab-18ce77c7121c path .sv.snapshots/.step_a.before
ID 259 gen 8 cgen 8 top level 5 otime 2026-12-02 00:43:30 parent_uuid 46ccc9b5-1887-6d44-b956-f3c075e865b8 \
uuid 2efe6b4c-6e2c-d74b-aac1-622e6ee9e0f8 path .sv.snapshots/.step_b.before
"""


# ---------------------------------------------------------------- parsers (no btrfs needed)

def test_parse_subvolume_show_of_a_snapshot() -> None:
    assert parse_subvolume_show(SHOW_SNAPSHOT) == SubvolumeInfo(
        path=".sv.snapshots/.step_a.before", name=".step_a.before",
        uuid="7a5ef4f1-289d-c240-b6ab-18ce77c7121c", subvolume_id=258, generation=7, gen_at_creation=7,
        parent_uuid="46ccc9b5-1887-6d44-b956-f3c075e865b8", flags="readonly",
        creation_time="2026-12-02 00:43:30 +0000")


def test_parse_subvolume_show_skips_the_snapshot_list() -> None:
    info = parse_subvolume_show(SHOW_SUBVOLUME)
    assert (info.name, info.subvolume_id, info.parent_uuid, info.flags) == ("sv", 256, None, "-")


def test_parse_subvolume_show_refuses_output_without_uuid() -> None:
    with pytest.raises(TargetError, match="cannot parse btrfs subvolume show"):
        parse_subvolume_show("sv\n\tName: \t\t\tsv\n")


def test_parse_subvolume_list_reads_id_and_path_of_every_column_set() -> None:
    assert [(s.subvolume_id, s.path) for s in parse_subvolume_list(LIST_NESTED + LIST_SNAPSHOTS)] == [
        (257, "sv/.installengine"), (258, ".sv.snapshots/.step_a.before"),
        (259, ".sv.snapshots/.step_b.before")]


def test_parse_subvolume_list_refuses_other_lines() -> None:
    with pytest.raises(TargetError, match="cannot parse btrfs subvolume list"):
        parse_subvolume_list("ERROR: can't access 'x'\n")


def test_order_snapshots_by_subvolume_id_even_within_one_generation() -> None:
    older = parse_subvolume_show(SHOW_SNAPSHOT)
    # Same transaction (Gen at creation) and second, later id: the id decides.
    newer = SubvolumeInfo(".sv.snapshots/.step_0.before", ".step_0.before", "u-newer", 300, 7, 7,
                          None, "readonly", older.creation_time)
    foreign = SubvolumeInfo("x", "manual", "u-foreign", 100, 1, 1, None, "readonly", "")
    assert order_snapshots({".step_0.before": newer, ".step_a.before": older, "manual": foreign}) == [
        FsSnapshot(".step_a.before", older.uuid), FsSnapshot(".step_0.before", "u-newer")]


def test_mount_points_undo_octal_escapes() -> None:
    text = ("27 1 0:25 / / rw - overlay overlay rw\n"
            "60 27 7:0 / /tmp/my\\040disk rw,relatime - btrfs /dev/loop0 rw,subvol=/\n")
    assert mount_points(text) == {"/", "/tmp/my disk"}


def test_missing_btrfs_tool_is_a_one_line_target_error(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for call in (BtrfsTarget(tmp_path / "install").prepare, BtrfsTarget(tmp_path).exists):
        with pytest.raises(TargetError) as caught:
            call()
        err = caught.value
        assert err.command is not None
        assert err.command[0] == "btrfs"
        assert err.returncode == 127
        assert "btrfs is not installed" in str(err)
        assert "install btrfs-progs" in str(err)
        assert "\n" not in str(err)


# ---------------------------------------------------------------- on a real btrfs

def _is_subvolume(path: Path) -> bool:
    return path.is_dir() and path.stat().st_ino == 256


@pytest.mark.btrfs
class TestBtrfsTarget(SnapshotTargetContract):
    @pytest.fixture(autouse=True)
    def _subvolume(self, btrfs_subvolume: Path) -> None:
        self.subvolume = btrfs_subvolume

    def make_target(self, tmp_path: Path) -> BtrfsTarget:
        return BtrfsTarget(self.subvolume)

    def test_state_dir_is_a_nested_subvolume_left_empty_in_snapshots(self, target: BtrfsTarget) -> None:
        assert _is_subvolume(target.state_dir)
        (target.state_dir / "log.db").write_text("events")
        target.snapshot(".step_a.before")
        stand_in = target.snapshot_dir / ".step_a.before" / ".installengine"
        assert stand_in.is_dir()
        assert list(stand_in.iterdir()) == []

    def test_snapshots_are_read_only_and_beside_the_target(self, target: BtrfsTarget) -> None:
        snap = target.snapshot(".step_a.before")
        where = target.snapshot_dir / ".step_a.before"
        assert target.snapshot_dir == self.subvolume.parent / f".{self.subvolume.name}.snapshots"
        with pytest.raises(OSError, match="Read-only file system"):
            (where / "x").write_text("x")
        shown = subprocess.run(["btrfs", "subvolume", "show", str(where)], capture_output=True, text=True,
                               check=True).stdout
        assert parse_subvolume_show(shown).uuid == snap.id

    def test_prepare_creates_a_missing_subvolume(self) -> None:
        inner = BtrfsTarget(self.subvolume / "new")
        assert not inner.exists()
        inner.prepare()
        assert inner.exists()
        assert _is_subvolume(inner.root)
        assert _is_subvolume(inner.state_dir)

    def test_prepare_refuses_a_plain_directory(self) -> None:
        (self.subvolume / "plain").mkdir()
        with pytest.raises(TargetError, match="is not a btrfs subvolume; create one with") as caught:
            BtrfsTarget(self.subvolume / "plain").prepare()
        assert "\n" not in str(caught.value)
        assert "Not a Btrfs subvolume" in caught.value.stderr

    def test_prepare_refuses_a_plain_state_directory_with_content(self) -> None:
        (self.subvolume / ".installengine").mkdir()
        (self.subvolume / ".installengine" / "log.db").write_text("someone's")
        with pytest.raises(TargetError, match="plain directory, not a subvolume"):
            BtrfsTarget(self.subvolume).prepare()
        assert (self.subvolume / ".installengine" / "log.db").read_text() == "someone's"

    def test_prepare_refuses_a_mount_point(self) -> None:
        with pytest.raises(TargetError, match="is a mount point"):
            BtrfsTarget(os.environ["INSTALLENGINE_TEST_BTRFS"]).prepare()

    def test_rollback_refuses_to_lose_a_foreign_nested_subvolume(self, target: BtrfsTarget) -> None:
        subprocess.run(["btrfs", "subvolume", "create", str(target.root / "data")], check=True,
                       capture_output=True)
        (target.root / "f").write_text("now")
        target.snapshot(".step_a.before")
        with pytest.raises(TargetError, match=r"contains subvolumes .*data"):
            target.rollback(".step_a.before")
        assert (target.root / "f").read_text() == "now"
        assert _is_subvolume(target.root / "data")
        assert _is_subvolume(target.state_dir)

    def test_crash_before_the_swap_is_undone_by_prepare(self, target: BtrfsTarget) -> None:
        (target.root / "f").write_text("snapshotted")
        target.snapshot(".step_a.before")
        (target.root / "f").write_text("current")
        (target.state_dir / "log.db").write_text("events")
        # rollback() steps 1 and 2, then the process dies.
        work = target.snapshot_dir / ".rollback"
        subprocess.run(["btrfs", "subvolume", "snapshot", str(target.snapshot_dir / ".step_a.before"),
                        str(work)], check=True, capture_output=True)
        (work / ".installengine").rmdir()
        os.rename(target.state_dir, work / ".installengine")

        BtrfsTarget(self.subvolume).prepare()
        assert (target.state_dir / "log.db").read_text() == "events"
        assert (target.root / "f").read_text() == "current"
        assert not work.exists()

    def test_crash_after_the_swap_is_finished_by_prepare(self, target: BtrfsTarget) -> None:
        (target.root / "f").write_text("snapshotted")
        target.snapshot(".step_a.before")
        later = target.snapshot(".step_b.before")
        (target.root / "f").write_text("current")
        (target.state_dir / "log.db").write_text("events")
        # rollback() steps 1 to 3, then the process dies before deleting anything.
        work = target.snapshot_dir / ".rollback"
        subprocess.run(["btrfs", "subvolume", "snapshot", str(target.snapshot_dir / ".step_a.before"),
                        str(work)], check=True, capture_output=True)
        (work / ".installengine").rmdir()
        os.rename(target.state_dir, work / ".installengine")
        _exchange(work, target.root)

        again = BtrfsTarget(self.subvolume)
        again.prepare()
        assert (again.state_dir / "log.db").read_text() == "events"
        assert (again.root / "f").read_text() == "snapshotted"
        assert not work.exists()
        assert later in again.list_snapshots()  # not destroyed yet; the next rollback does that

    def test_a_half_taken_snapshot_is_dropped_by_prepare(self, target: BtrfsTarget) -> None:
        leftover = target.snapshot_dir / ".tmp-.step_a.before-deadbeef"
        subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(target.root), str(leftover)],
                       check=True, capture_output=True)
        target.prepare()
        assert not leftover.exists()
        assert target.list_snapshots() == []

    def test_not_on_btrfs_is_a_one_line_target_error(self, tmp_path: Path) -> None:
        fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True,
                                check=True).stdout.strip()
        if fstype == "btrfs":
            pytest.skip("the temporary directory is on btrfs itself")
        with pytest.raises(TargetError, match="not on a btrfs filesystem") as caught:
            BtrfsTarget(tmp_path / "install").prepare()
        assert "\n" not in str(caught.value)
        assert caught.value.command is not None
        assert caught.value.command[:3] == ["btrfs", "subvolume",
                                                                                   "create"]
