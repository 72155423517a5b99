"""DirectoryTarget against the target contract: copies in its own state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from installengine.snapshots import DirectoryTarget

from .contract import SnapshotTargetContract


class TestDirectoryTarget(SnapshotTargetContract):
    def make_target(self, tmp_path: Path) -> DirectoryTarget:
        return DirectoryTarget(tmp_path / "install")

    def test_copies_live_in_the_state_dir(self, target: DirectoryTarget) -> None:
        (target.root / "f").write_text("x")
        target.snapshot(".step_a.before")
        assert (target.state_dir / "fs" / ".step_a.before" / "f").read_text() == "x"



def test_a_copy_is_flushed_before_it_becomes_a_snapshot(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A power cut cannot be staged here, so this records what the real os.fsync is asked to
    # flush: every file and directory of the copy while it is still the temporary one.
    target = DirectoryTarget(tmp_path / "t")
    target.prepare()
    (target.root / "etc").mkdir()
    (target.root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (target.root / "link").symlink_to("etc/hosts")
    flushed: list[Path] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target.snapshot(".step_a.before")
    fs = target.state_dir / "fs"
    copies = {p.relative_to(fs).parts[0] for p in flushed}
    assert len(copies) == 1
    (tmp,) = copies
    assert tmp.startswith(".tmp-")
    inside = {str(p.relative_to(fs / tmp)) for p in flushed}
    assert inside == {".", "etc", "etc/hosts", "..installengine-id"}  # the id file too
    assert (fs / ".step_a.before" / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
