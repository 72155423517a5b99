"""`installengine demo`: the whole engine in one command, on a fresh directory, in seconds."""

from __future__ import annotations

import json
import time
from importlib import resources

from installengine.eventlog import EventLog

from .conftest import error_lines, installengine

DEMO_BUDGET_S = 15.0


def test_the_demo_pauses_resumes_in_a_new_process_and_verifies(tmp_path):
    where = tmp_path / "demo"
    started = time.monotonic()
    done = installengine("demo", where, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < DEMO_BUDGET_S, f"the demo took {elapsed:.1f} s"
    out = done.stdout
    steps = [line for line in out.splitlines() if line.startswith("$ installengine ")]
    assert [s.split()[2] for s in steps] == ["run", "list", "run", "list", "history", "verify"]
    assert "--pause-before configure" in steps[0]
    assert "--resume" in steps[2]
    assert "Paused before 'configure'." in out
    assert "resuming from 'configure' (the latest resumable checkpoint)" in out
    assert "rolled back to lay-down-files completed" in out
    assert "hash chain intact" in out
    assert "\nOK\n" in out
    assert "What you just saw:" in out
    assert "Try next:" in out
    assert "Traceback" not in out + done.stderr
    # It left a real install behind, and everything in it is resumable now.
    root = where / "target"
    assert (root / "etc" / "hostname").read_text() == "demo-host\n"
    assert "root=UUID=" in (root / "boot" / "loader" / "entries" / "demo.conf").read_text()
    manifest = (root / "etc" / "installengine-manifest").read_text().splitlines()
    assert len(manifest) == 28  # 22 laid-down files, 4 of configure, 2 of the boot loader
    assert not any(".installengine" in line for line in manifest)
    listed = installengine("list", where / "plan.toml", "--json")
    assert all(v["resumable"] for v in json.loads(listed.stdout))
    with EventLog.open(root / ".installengine" / "log.db", readonly=True) as log:
        sessions = {ev.session for ev in log.query(kind="execution-started")}
        assert len(sessions) == 2  # paused in one process, resumed in another
        assert log.verify().ok


def test_the_demo_refuses_a_directory_that_is_not_empty(tmp_path, invoke):
    (tmp_path / "precious.txt").write_text("keep me")
    result = invoke("demo", tmp_path)
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"Error: demo directory {tmp_path} is not empty; pass a new or empty directory, or "
        "none for a temporary one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "volatile-root"]


def test_the_demo_plan_runs_dry_without_writing(tmp_path, invoke):
    (tmp_path / "demo").mkdir()
    text = tmp_path / "demo.toml"
    bundled = resources.files("installengine.statemachine.demo").joinpath("plan.toml")
    text.write_text(bundled.read_text())
    result = invoke("run", text, "--target", f"dir:{tmp_path / 'demo'}", "--dry-run")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [".installengine"]
