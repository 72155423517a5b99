"""DirectoryTarget against the target contract: copies in its own state directory."""

from __future__ import annotations

from pathlib import Path

from installengine.snapshots import DirectoryTarget

from .contract import SnapshotTargetContract


class TestDirectoryTarget(SnapshotTargetContract):
    def make_target(self, tmp_path: Path) -> DirectoryTarget:
        return DirectoryTarget(tmp_path / "install")

    def test_copies_live_in_the_state_dir(self, target: DirectoryTarget) -> None:
        (target.root / "f").write_text("x")
        target.snapshot(".step_a.before")
        assert (target.state_dir / "fs" / ".step_a.before" / "f").read_text() == "x"
