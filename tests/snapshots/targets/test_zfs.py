"""ZfsTarget: the target contract on a real zfs-fuse pool, its error messages, and its parsers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from installengine.snapshots import ZfsTarget
from installengine.snapshots.errors import TargetError
from installengine.snapshots.targets.base import FsSnapshot
from installengine.snapshots.targets.zfs import (
    _explain,
    all_snapshot_names,
    check_dataset_name,
    parse_zfs_get,
    snapshots_of,
)

from .contract import SnapshotTargetContract

# Captured from zfs-fuse 0.7.0 (Debian 12) with
# zfs get -H -p -r -d 1 -o name,property,value type,createtxg,guid,mountpoint,mounted iesandbox/install
# after snapshots .step_partition.before, manual, .step_configure.before of the dataset and
# .step_x.before of its state dataset. Note that zfs-fuse's "zfs list" has no -p at all.
ZFS_GET = """\
iesandbox/install\ttype\tfilesystem
iesandbox/install\tcreatetxg\t10
iesandbox/install\tguid\t1192237062727284338
iesandbox/install\tmountpoint\t/tmp/installengine-sandbox/zfs/install
iesandbox/install\tmounted\tyes
iesandbox/install@.step_partition.before\ttype\tsnapshot
iesandbox/install@.step_partition.before\tcreatetxg\t17
iesandbox/install@.step_partition.before\tguid\t11458738675386565961
iesandbox/install@.step_partition.before\tmountpoint\t-
iesandbox/install@.step_partition.before\tmounted\t-
iesandbox/install@manual\ttype\tsnapshot
iesandbox/install@manual\tcreatetxg\t22
iesandbox/install@manual\tguid\t2584871788398189348
iesandbox/install@manual\tmountpoint\t-
iesandbox/install@manual\tmounted\t-
iesandbox/install@.step_configure.before\ttype\tsnapshot
iesandbox/install@.step_configure.before\tcreatetxg\t27
iesandbox/install@.step_configure.before\tguid\t1281958223877859639
iesandbox/install@.step_configure.before\tmountpoint\t-
iesandbox/install@.step_configure.before\tmounted\t-
iesandbox/install/.installengine\ttype\tfilesystem
iesandbox/install/.installengine\tcreatetxg\t12
iesandbox/install/.installengine\tguid\t9434795291989430163
iesandbox/install/.installengine\tmountpoint\t/tmp/installengine-sandbox/zfs/install/.installengine
iesandbox/install/.installengine\tmounted\tyes
"""

# Captured stderr of zfs-fuse's zfs when its daemon is not running, and for a missing dataset.
NO_DAEMON = """connect: Connection refused
Please make sure that the zfs-fuse daemon is running.
internal error: failed to initialize ZFS library"""
NO_DATASET = "cannot open 'iesandbox/nope': dataset does not exist"


# ---------------------------------------------------------------- parsers (no ZFS needed)

def test_parse_zfs_get_groups_properties_by_name_in_output_order() -> None:
    props = parse_zfs_get(ZFS_GET)
    assert list(props) == ["iesandbox/install", "iesandbox/install@.step_partition.before",
                           "iesandbox/install@manual", "iesandbox/install@.step_configure.before",
                           "iesandbox/install/.installengine"]
    assert props["iesandbox/install"]["mountpoint"] == "/tmp/installengine-sandbox/zfs/install"
    assert props["iesandbox/install@manual"]["guid"] == "2584871788398189348"


def test_parse_zfs_get_keeps_spaces_in_values() -> None:
    props = parse_zfs_get("pool/ds\tcreation\tWed Dec  2  0:42 2026\n")
    assert props == {"pool/ds": {"creation": "Wed Dec  2  0:42 2026"}}


def test_parse_zfs_get_refuses_a_line_without_three_fields() -> None:
    with pytest.raises(TargetError, match="cannot parse zfs get output"):
        parse_zfs_get("pool/ds guid 123\n")


def test_snapshots_of_lists_only_the_datasets_own_step_snapshots_by_createtxg() -> None:
    props = parse_zfs_get(ZFS_GET)
    assert snapshots_of("iesandbox/install", props) == [
        FsSnapshot(".step_partition.before", "11458738675386565961"),
        FsSnapshot(".step_configure.before", "1281958223877859639"),
    ]
    assert snapshots_of("iesandbox/install/.installengine", props) == []


def test_snapshots_of_orders_by_createtxg_not_by_output_order() -> None:
    text = ("p/d@.step_b\tcreatetxg\t30\np/d@.step_b\tguid\t2\n"
            "p/d@.step_a\tcreatetxg\t9\np/d@.step_a\tguid\t1\n")
    assert [s.name for s in snapshots_of("p/d", parse_zfs_get(text))] == [".step_a", ".step_b"]


def test_snapshots_of_refuses_a_snapshot_without_guid() -> None:
    with pytest.raises(TargetError, match="without a usable guid"):
        snapshots_of("p/d", parse_zfs_get("p/d@.step_a\tcreatetxg\t9\n"))


def test_all_snapshot_names_includes_foreign_snapshots() -> None:
    assert all_snapshot_names("iesandbox/install", parse_zfs_get(ZFS_GET)) == [
        ".step_partition.before", "manual", ".step_configure.before"]


@pytest.mark.parametrize("name", ["", "pool/ds@snap", "pool//ds", "pool/with space", "pool/é"])
def test_bad_dataset_names_are_refused_before_zfs_runs(name: str) -> None:
    with pytest.raises(TargetError, match="not a ZFS dataset name"):
        check_dataset_name(name)


def test_a_stopped_daemon_gets_a_message_saying_to_start_it() -> None:
    err = _explain(TargetError("zfs get failed", command=["zfs", "get"], returncode=1, stderr=NO_DAEMON),
                   "pool/ds")
    assert "start it" in str(err)
    assert "\n" not in str(err)
    assert err.command == ["zfs", "get"]
    assert err.stderr == NO_DAEMON


def test_a_missing_dataset_gets_a_message_saying_how_to_create_it() -> None:
    err = _explain(TargetError("x", command=["zfs"], returncode=1, stderr=NO_DATASET), "iesandbox/nope")
    assert str(err) == ("ZFS dataset iesandbox/nope does not exist; create it with: zfs create "
                        "iesandbox/nope (or fix the zfs: target spec)")


def test_missing_zfs_tool_is_a_one_line_target_error(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetError) as caught:
        ZfsTarget("pool/install").prepare()
    err = caught.value
    assert err.command is not None
    assert err.command[0] == "zfs"
    assert err.returncode == 127
    assert "\n" not in str(err)
    assert "zfs is not installed" in str(err)


def test_spec_names_the_dataset_without_running_zfs() -> None:
    assert ZfsTarget("/pool/install/").spec == "zfs:pool/install"


# ---------------------------------------------------------------- on a real pool

@pytest.mark.zfs
class TestZfsTarget(SnapshotTargetContract):
    @pytest.fixture(autouse=True)
    def _dataset(self, zfs_dataset: str) -> None:
        self.dataset = zfs_dataset

    def make_target(self, tmp_path: Path) -> ZfsTarget:
        return ZfsTarget(self.dataset)

    def _zfs_get(self, *args: str) -> dict[str, dict[str, str]]:
        done = subprocess.run(["zfs", "get", "-H", "-p", "-o", "name,property,value", *args],
                              capture_output=True, text=True, check=True)
        return parse_zfs_get(done.stdout)

    def test_state_dir_is_a_child_dataset_at_root(self, target: ZfsTarget) -> None:
        props = self._zfs_get("type,mountpoint", target.state_dataset)
        assert props[target.state_dataset]["type"] == "filesystem"
        assert Path(props[target.state_dataset]["mountpoint"]) == target.state_dir
        assert target.state_dir == target.root / ".installengine"

    def test_snapshot_id_is_the_guid(self, target: ZfsTarget) -> None:
        snap = target.snapshot(".step_a.before")
        assert snap.id == self._zfs_get("guid", f"{self.dataset}@.step_a.before")[
            f"{self.dataset}@.step_a.before"]["guid"]

    def test_foreign_snapshots_are_not_listed_nor_returned(self, target: ZfsTarget) -> None:
        first = target.snapshot(".step_a.before")
        subprocess.run(["zfs", "snapshot", f"{self.dataset}@manual"], check=True)
        assert target.list_snapshots() == [first]
        assert target.rollback(".step_a.before") == []  # zfs rollback -r destroyed @manual anyway
        assert "manual" not in all_snapshot_names(self.dataset, self._zfs_get("-r", "-d", "1", "guid",
                                                                              self.dataset))

    def test_prepare_mounts_an_unmounted_dataset(self, target: ZfsTarget) -> None:
        (target.state_dir / "log.db").write_text("kept")
        subprocess.run(["zfs", "unmount", target.state_dataset], check=True)
        subprocess.run(["zfs", "unmount", self.dataset], check=True)
        again = ZfsTarget(self.dataset)
        again.prepare()
        assert (again.state_dir / "log.db").read_text() == "kept"

    def test_missing_dataset_is_a_one_line_target_error(self) -> None:
        missing = ZfsTarget(f"{self.dataset}/nope")
        assert not missing.exists()
        with pytest.raises(TargetError) as caught:
            missing.prepare()
        err = caught.value
        assert str(err).startswith(f"ZFS dataset {missing.dataset} does not exist; create it with")
        assert "\n" not in str(err)
        assert err.command is not None
        assert err.command[0] == "zfs"
        assert "dataset does not exist" in err.stderr
        for call in (missing.list_snapshots, lambda: missing.snapshot(".step_a.before"),
                     lambda: missing.root):
            with pytest.raises(TargetError, match="does not exist; create it with"):
                call()

    def test_invalid_snapshot_name_is_refused(self, target: ZfsTarget) -> None:
        with pytest.raises(TargetError, match="not a valid ZFS snapshot name"):
            target.snapshot(".step_a b")
