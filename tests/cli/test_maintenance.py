"""`cleanup`, `gc`, `prune` (and its pure planning) and `diagram`."""

from __future__ import annotations

import os

import orjson
import pytest
from installengine.eventlog import EventKind, EventLog, SessionInfo
from installengine.snapshots import FsSnapshot, Lineage, SnapshotPoint, When, read_lineage
from installengine.snapshots.retention import plan_prune
from installengine.snapshots.store import SnapshotFile
from installengine.statemachine.lifecycle import to_mermaid

from .conftest import cli_json, error_lines


@pytest.fixture
def done(ws, invoke):
    """The standard plan run to the end: six snapshot points, each with a filesystem copy."""
    plan = ws.standard_plan()
    ws.release.touch()
    assert invoke("run", plan).exit_code == 0
    return plan


def fs_names(ws) -> list[str]:
    return sorted(p.name for p in (ws.target / ".installengine" / "fs").iterdir())


def test_cleanup_removes_snapshots_keeps_history_and_only_the_first_is_resumable(ws, invoke,
                                                                                 done):
    with EventLog.open(ws.log, readonly=True) as log:
        events = len(log)
    result = invoke("cleanup", done)
    assert result.exit_code == 0
    assert result.stdout == ("removed 0 snapshot file(s) and 4 filesystem snapshot(s); the "
                             "history stays. Only 'first' is resumable now.\n")
    assert fs_names(ws) == []
    with EventLog.open(ws.log, readonly=True) as log:
        assert len(log) > events
        assert next(log.query(kind=EventKind.CLEANUP)).data["destroyed_fs_snapshots"]
    verdicts = cli_json(invoke("list", done, "--json"))
    assert [v["resumable"] for v in verdicts] == [True, False, False]


def test_cleanup_needs_a_target(ws, invoke):
    plan = ws.plan([{"name": "a", "call": "cli_steps:record", "args": ["a"]}], engine={})
    result = invoke("cleanup", plan)
    assert result.exit_code == 2
    assert error_lines(result) == ["Error: cleanup needs a target: pass --target T or set "
                                   "[engine] target in the plan"]


def test_gc_removes_areas_of_dead_sessions_only(ws, invoke, temp_root, open_engine):
    live = open_engine()  # an engine without a target has a live area under temp_root
    areas = temp_root / f"installengine-{os.getuid()}"
    dead = areas / "deadbeef0000"
    dead.mkdir(mode=0o700)
    info = SessionInfo.current("0")
    record = {**info.as_json(), "id": "deadbeef0000", "pid": 2**22 + 12345, "start_ticks": 1}
    (dead / "session.json").write_bytes(orjson.dumps(record))
    dry = invoke("gc", "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout == f"would remove {dead}\n1 temporary area(s) would remove\n"
    assert dead.exists()
    result = invoke("gc")
    assert result.stdout == f"removed {dead}\n1 temporary area(s) removed\n"
    assert not dead.exists()
    assert (areas / live.session.id).exists()


def test_prune_is_a_dry_run_without_confirm(ws, invoke, done):
    before = fs_names(ws)
    result = invoke("prune", "--target", ws.spec, "--keep-last", "2")
    assert result.exit_code == 0
    assert "would destroy 2 filesystem snapshot(s)" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "dry run: nothing was removed; run again with --confirm to remove them")
    assert fs_names(ws) == before


def test_prune_confirm_keeps_the_last_points_resumable_and_records_pruned(ws, invoke, done):
    result = invoke("prune", "--target", ws.spec, "--keep-last", "2", "--confirm", "--json")
    assert result.exit_code == 0
    report = cli_json(result)
    assert report["confirmed"] is True
    # "X completed" and "before Y" share one filesystem snapshot, so the two points
    # kept (before last, last completed) keep .step_wait.done and .step_last.done.
    assert report["destroyed_fs_snapshots"] == [".step_first.before", ".step_first.done"]
    assert fs_names(ws) == [".step_last.done", ".step_wait.done"]
    with EventLog.open(ws.log, readonly=True) as log:
        [pruned] = list(log.query(kind=EventKind.PRUNED))
        assert pruned.data["keep_last"] == 2
        assert pruned.data["destroyed_fs_snapshots"] == report["destroyed_fs_snapshots"]
    verdicts = {v["name"]: v for v in cli_json(invoke("list", done, "--json"))}
    assert verdicts["last"]["resumable"] is True
    assert verdicts["first"]["resumable"] is True  # always: a fresh attempt
    assert verdicts["wait"]["reason"] == (
        "filesystem snapshot missing: .step_first.done (taken at first completed) is gone")
    resumed = invoke("run", done, "--start-from", "last")
    assert resumed.exit_code == 0, resumed.output


def test_prune_refuses_a_target_in_use(ws, invoke, done, open_engine):
    open_engine(ws.spec)
    result = invoke("prune", "--target", ws.spec, "--confirm")
    assert result.exit_code == 3


def test_prune_of_a_target_without_a_log_changes_nothing(ws, invoke):
    result = invoke("prune", "--target", ws.spec, "--confirm")
    assert result.exit_code == 0
    assert result.stdout == f"nothing to prune: no log at {ws.log}\n"
    assert not ws.target.exists()


def _point(seq: int, name: str, when: When, parent: int | None, fs: str | None) -> SnapshotPoint:
    return SnapshotPoint(seq=seq, checkpoint=name, when=when, digest="d" * 64, durable=True,
                         session="s", fingerprint="f", parent=parent, fs_snapshot=fs,
                         fs_id=f"id-{seq}" if fs else None)


def _lineage(points: list[SnapshotPoint], head: int | None) -> Lineage:
    return Lineage(points={p.seq: p for p in points}, head=head)


def test_plan_prune_keeps_the_last_points_of_the_current_lineage(tmp_path):
    a0 = _point(1, "a", When.BEFORE, None, ".step_a.before")
    a1 = _point(2, "a", When.COMPLETED, 1, ".step_a.done")
    b0 = _point(3, "b", When.BEFORE, 2, ".step_b.before")
    abandoned = _point(4, "b", When.COMPLETED, 3, ".step_b.done")
    # a rollback to before b, then b ran again: a new branch from point 3
    b1 = _point(6, "b", When.COMPLETED, 3, ".step_b.done")
    lineage = _lineage([a0, a1, b0, abandoned, b1], head=6)
    files = [SnapshotFile(seq, "d" * 64, tmp_path / f"{seq}.json", 1) for seq in (2, 4, 6)]
    fs = [FsSnapshot(".step_a.before", "id-1"), FsSnapshot(".step_a.done", "id-2"),
          FsSnapshot(".step_b.before", "id-3"), FsSnapshot(".step_b.done", "id-6"),
          FsSnapshot(".step_zzz", "not-ours")]
    plan = plan_prune(lineage, files, fs, keep_last=2)
    assert [p.seq for p in plan.kept] == [3, 6]
    assert plan.cutoff == 3
    assert [f.seq for f in plan.files] == [2]
    assert [s.name for s in plan.fs_snapshots] == [".step_a.before", ".step_a.done"]
    everything = plan_prune(lineage, files, fs, keep_last=0)
    assert [f.seq for f in everything.files] == [2, 4, 6]
    assert ".step_zzz" not in [s.name for s in everything.fs_snapshots]
    assert plan_prune(lineage, files, fs, keep_last=99).empty


def test_plan_prune_after_cleanup_keeps_nothing(tmp_path):
    a0 = _point(1, "a", When.BEFORE, None, ".step_a.before")
    plan = plan_prune(_lineage([a0], head=None), [], [FsSnapshot(".step_a.before", "id-1")],
                      keep_last=5)
    assert plan.kept == ()
    assert [s.name for s in plan.fs_snapshots] == [".step_a.before"]


def test_prune_plan_reads_the_real_lineage(ws, invoke, done):
    with EventLog.open(ws.log, readonly=True) as log:
        chain = read_lineage(log).chain()
    result = cli_json(invoke("prune", "--target", ws.spec, "--keep-last", "3", "--json"))
    assert result["kept_points"] == [p.seq for p in chain[-3:]]
    assert result["confirmed"] is False


def test_diagram_prints_the_lifecycle_mermaid(invoke):
    result = invoke("diagram")
    assert result.exit_code == 0
    assert result.stdout == to_mermaid() + "\n"
    assert "stateDiagram-v2" in result.stdout
