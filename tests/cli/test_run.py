"""`installengine run`: executing, pausing, resuming, and the exit code of each outcome."""

from __future__ import annotations

import json

from installengine.eventlog import EventLog

from .conftest import error_lines, json_lines


def kinds(ws) -> list[str]:
    with EventLog.open(ws.log, readonly=True) as log:
        return [ev.kind for ev in log.query()]


def test_run_executes_every_checkpoint_and_exits_0(ws, invoke):
    ws.release.touch()
    result = invoke("run", ws.standard_plan())
    assert result.exit_code == 0, result.output
    assert "Done: every checkpoint requested completed." in result.stdout
    assert (ws.target / "first.txt").read_text() == "first=True\n"
    assert (ws.target / "last.txt").exists()
    assert kinds(ws).count("checkpoint-completed") == 3


def test_run_json_prints_progress_and_events_then_the_result(ws, invoke):
    ws.release.touch()
    result = invoke("run", ws.standard_plan(), "--json")
    assert result.exit_code == 0
    lines = json_lines(result.stdout)
    assert lines[-1] == {"status": "SUCCESS", "failed": [], "canceled": None, "errors": {}}
    progress = [line["percent"] for line in lines[:-1] if line["type"] == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100
    events = [line for line in lines[:-1] if line["type"] == "event"]
    assert {"seq", "session", "ts", "kind", "checkpoint", "data", "prev_hash", "hash"} <= set(
        events[0])
    completed = [e["checkpoint"] for e in events if e["kind"] == "checkpoint-completed"]
    assert completed == ["first", "wait", "last"]
    assert "cache-changed" not in {e["kind"] for e in events}


def test_pause_before_exits_0_and_a_new_process_resumes_with_resume(ws, invoke):
    plan = ws.standard_plan()
    ws.release.touch()
    paused = invoke("run", plan, "--pause-before", "wait")
    assert paused.exit_code == 0
    assert f"Paused before 'wait'. Continue with: installengine run {plan} --resume" in (
        paused.stdout)
    assert not (ws.target / "last.txt").exists()
    # Each invoke opens a new engine on the durable log: a restart, as far as the rules go.
    resumed = invoke("run", plan, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from 'wait'" in resumed.stderr
    events = [e for e in json_lines(resumed.stdout) if e.get("type") == "event"]
    started = next(e for e in events if e["kind"] == "execution-started")
    assert started["data"]["start_from"] == "wait"
    assert [e["checkpoint"] for e in events if e["kind"] == "checkpoint-completed"] == [
        "wait", "last"]


def test_resume_after_everything_completed_runs_nothing(ws, invoke):
    plan = ws.standard_plan()
    ws.release.touch()
    assert invoke("run", plan).exit_code == 0
    before = kinds(ws).count("execution-started")
    result = invoke("run", plan, "--resume")
    assert result.exit_code == 0
    assert "nothing to resume" in result.stdout
    assert kinds(ws).count("execution-started") == before


def test_start_from_rolls_back_the_target_and_reruns_from_there(ws, invoke):
    plan = ws.standard_plan()
    ws.release.touch()
    assert invoke("run", plan).exit_code == 0
    (ws.target / "stray.txt").write_text("written after 'wait' started")
    result = invoke("run", plan, "--start-from", "wait", "--json")
    assert result.exit_code == 0
    assert not (ws.target / "stray.txt").exists()  # the filesystem went back to before 'wait'
    assert (ws.target / "last.txt").exists()
    events = [e for e in json_lines(result.stdout) if e.get("type") == "event"]
    assert next(e["kind"] for e in events) == "rolled-back"


def test_failed_checkpoint_exits_1_with_one_error_line(ws, invoke):
    plan = ws.plan([
        {"name": "ok", "call": "cli_steps:record", "args": ["ok"]},
        {"name": "partition", "call": "cli_steps:boom", "args": ["disk /dev/sdz not found"]},
        {"name": "never", "call": "cli_steps:record", "args": ["never"]},
    ])
    result = invoke("run", plan)
    assert result.exit_code == 1
    assert error_lines(result) == [
        "Error: checkpoint failed: 'partition' (ValueError: disk /dev/sdz not found)"]
    assert "Traceback" not in result.output
    assert f"retry with: installengine run {plan} --start-from partition" in result.stdout
    assert not (ws.target / "never.txt").exists()


def test_failed_checkpoint_json_result_carries_the_error(ws, invoke):
    plan = ws.plan([{"name": "partition", "call": "cli_steps:boom", "args": ["no disk"]}])
    result = invoke("run", plan, "--json")
    assert result.exit_code == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["status"] == "FAILED"
    assert last["failed"] == ["partition"]
    assert last["errors"]["partition"]["type"] == "ValueError"
    assert last["errors"]["partition"]["message"] == "no disk"
    assert "Traceback" in last["errors"]["partition"]["traceback"]


def test_stop_on_error_false_runs_the_rest_and_still_exits_1(ws, invoke):
    plan = ws.plan([
        {"name": "bad", "call": "cli_steps:boom", "args": ["x"]},
        {"name": "after", "call": "cli_steps:record", "args": ["after"]},
    ], engine={"target": ws.spec, "stop_on_error": False})
    result = invoke("run", plan)
    assert result.exit_code == 1
    assert (ws.target / "after.txt").exists()


def test_init_failure_exits_1(ws, invoke):
    plan = ws.plan([{"name": "pkgs", "call": "installengine.statemachine.demo.steps:LayDownFiles",
                     "args": [["no-such-package"]]}])
    result = invoke("run", plan, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "INIT_FAILED"


def test_checkpoint_that_gives_up_is_canceled_exit_130(ws, invoke):
    plan = ws.plan([{"name": "quit", "call": "cli_steps:give_up"}])
    result = invoke("run", plan)
    assert result.exit_code == 130
    assert "Canceled: 'quit' was interrupted and is not completed." in result.stderr


def test_not_resumable_start_from_exits_3(ws, invoke):
    plan = ws.standard_plan()
    result = invoke("run", plan, "--start-from", "last")
    assert result.exit_code == 3
    assert error_lines(result) == [
        "Error: cannot resume from 'last': never completed: 'first' has not completed in the "
        "current lineage; resume from 'first' or run without --start-from"]


def test_target_in_use_exits_3(ws, invoke, open_engine):
    plan = ws.standard_plan()
    holder = open_engine(ws.spec)
    result = invoke("run", plan)
    assert result.exit_code == 3
    [line] = error_lines(result)
    assert line.startswith(f"Error: target state {ws.target / '.installengine'} is in use by "
                           f"pid {holder.session.pid} on ")


def test_target_option_overrides_the_plan(ws, invoke, tmp_path):
    ws.release.touch()
    other = tmp_path / "elsewhere"
    result = invoke("run", ws.standard_plan(), "--target", f"dir:{other}")
    assert result.exit_code == 0
    assert (other / "first.txt").exists()
    assert not ws.target.exists()


def test_dry_run_takes_no_snapshot_points_and_writes_nothing(ws, invoke):
    ws.release.touch()
    result = invoke("run", ws.standard_plan(), "--dry-run")
    assert result.exit_code == 0
    assert not (ws.target / "first.txt").exists()
    assert "snapshot-taken" not in kinds(ws)


def test_run_without_a_target_warns_that_nothing_stays(ws, invoke):
    ws.release.touch()
    plan = ws.plan([{"name": "only", "call": "cli_steps:record", "args": ["k"]}], engine={})
    result = invoke("run", plan)
    assert result.exit_code == 0
    assert "no target" in result.stderr


def test_progress_weights_come_from_progress_estimate(ws, invoke):
    plan = ws.plan([{"name": "light", "call": "cli_steps:Weighted", "args": [1]},
                    {"name": "heavy", "call": "cli_steps:Weighted", "args": [3]}])
    result = invoke("run", plan, "--json")
    progress = [e for e in json_lines(result.stdout) if e.get("type") == "progress"]
    done = {e["checkpoint"]: e["percent"] for e in progress if e["message"] == "completed"}
    assert done == {"light": 28.75, "heavy": 100.0}  # 5 % loading, then 1:3 of the rest
