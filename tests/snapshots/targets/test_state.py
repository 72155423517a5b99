"""StateDir against the target contract: a state directory and no filesystem snapshots."""

from __future__ import annotations

from pathlib import Path

from installengine.snapshots import StateDir

from .contract import StateOnlyTargetContract


class TestStateDir(StateOnlyTargetContract):
    def make_target(self, tmp_path: Path) -> StateDir:
        return StateDir(tmp_path / "state")

    def test_root_and_state_dir_are_the_same_directory(self, target: StateDir) -> None:
        assert target.root == target.state_dir
