"""Half-written snapshots of a killed engine are removed by the engine that takes over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from installengine.statemachine import InstallEngine

DIES_HOLDING_THE_LOCK = """
import os, sys
from installengine.statemachine import InstallEngine
engine = InstallEngine(sys.argv[1])
state = engine.target.state_dir
(state / "snapshots").mkdir(exist_ok=True)
(state / "snapshots" / ".tmp-half-written").write_bytes(b"{")
(state / "fs" / ".tmp-.step_a.before-1234").mkdir()
os._exit(0)
"""


def test_a_takeover_removes_what_the_dead_engine_left_half_written(tmp_path: Path) -> None:
    spec = f"dir:{tmp_path / 'target'}"
    subprocess.run([sys.executable, "-c", DIES_HOLDING_THE_LOCK, spec], check=True, timeout=60)
    state = tmp_path / "target" / ".installengine"
    assert (state / "snapshots" / ".tmp-half-written").exists()
    with InstallEngine(spec) as engine:
        assert engine.log.verify().ok
        assert [e.kind for e in engine.log.query(kind="lock-taken-over")]
    assert not (state / "snapshots" / ".tmp-half-written").exists()
    assert not (state / "fs" / ".tmp-.step_a.before-1234").exists()


def test_a_clean_open_leaves_the_state_directory_alone(tmp_path: Path) -> None:
    spec = f"dir:{tmp_path / 'target'}"
    with InstallEngine(spec):
        pass
    keep = tmp_path / "target" / ".installengine" / "fs" / ".tmp-someone-elses"
    keep.mkdir()
    with InstallEngine(spec):
        pass
    assert keep.exists()  # no takeover, so nothing is judged stray
