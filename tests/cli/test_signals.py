"""Ctrl-C, SIGTERM and crashes of a real `installengine run` child process.

Each test synchronises with the checkpoint through the file it creates when it
starts and the file the test creates to let it finish, never with sleeps.
"""

from __future__ import annotations

import json
import signal

from installengine.eventlog import EventLog

from .conftest import installengine, read_line, wait_for_file


def log_kinds(ws) -> list[str]:
    with EventLog.open(ws.log, readonly=True) as log:
        return [ev.kind for ev in log.query()]


def resumable(ws, plan) -> dict[str, bool]:
    listed = installengine("list", plan, "--json")
    assert listed.returncode == 0, listed.stderr
    return {v["name"]: v["resumable"] for v in json.loads(listed.stdout)}


def test_one_ctrl_c_pauses_after_the_running_checkpoint_exit_130(ws, spawn):
    plan = ws.standard_plan()
    child = spawn("run", plan)
    wait_for_file(ws.started, child)
    child.send_signal(signal.SIGINT)
    assert read_line(child.stderr).startswith(
        "Ctrl-C: pausing after 'wait' completes; press Ctrl-C again to cancel it")
    ws.release.touch()  # the running checkpoint finishes its work
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert f"Paused after 'wait'. Continue with: installengine run {plan} --resume" in out
    kinds = log_kinds(ws)
    assert "paused" in kinds
    assert "canceled" not in kinds
    assert kinds.count("checkpoint-completed") == 2  # first and wait; last never started
    assert resumable(ws, plan) == {"first": True, "wait": True, "last": True}
    resumed = installengine("run", plan, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from 'last'" in resumed.stderr
    assert (ws.target / "last.txt").exists()


def test_one_ctrl_c_during_the_last_checkpoint_completes_the_install_exit_130(ws, spawn):
    plan = ws.plan([
        {"name": "first", "call": "cli_steps:record", "args": ["first"]},
        {"name": "wait", "call": "cli_steps:wait_for_release",
         "args": [str(ws.started), str(ws.release)]},
    ], engine={"target": ws.spec})
    child = spawn("run", plan)
    wait_for_file(ws.started, child)
    child.send_signal(signal.SIGINT)
    assert read_line(child.stderr).startswith("Ctrl-C: pausing after 'wait' completes")
    ws.release.touch()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Done: every checkpoint requested completed; the Ctrl-C came during the last" in out
    kinds = log_kinds(ws)
    assert kinds.count("checkpoint-completed") == 2
    assert "paused" not in kinds  # nothing was left to pause before: the install completed
    with EventLog.open(ws.log, readonly=True) as log:
        (finished,) = log.query(kind="execution-finished")
    assert finished.data["status"] == "SUCCESS"
    again = installengine("run", plan, "--resume")
    assert again.returncode == 0, again.stderr
    assert "nothing to resume" in again.stdout


def test_two_ctrl_c_cancel_the_running_checkpoint_exit_130(ws, spawn):
    plan = ws.standard_plan()
    child = spawn("run", plan)
    wait_for_file(ws.started, child)
    child.send_signal(signal.SIGINT)
    assert read_line(child.stderr).startswith("Ctrl-C: pausing")
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Ctrl-C again: canceling the running checkpoint" in err
    assert "Canceled: 'wait' was interrupted and is not completed." in err
    kinds = log_kinds(ws)
    assert "checkpoint-canceled" in kinds
    assert "canceled" in kinds
    # The canceled checkpoint has a durable before-point; the one after it never ran.
    verdicts = resumable(ws, plan)
    assert verdicts == {"first": True, "wait": True, "last": False}


def test_sigterm_cancels_exit_130(ws, spawn):
    plan = ws.standard_plan()
    child = spawn("run", plan, "--json")
    wait_for_file(ws.started, child)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert out.splitlines()[-1] == (
        '{"status":"CANCELED","failed":[],"canceled":"wait","errors":{}}')


def test_after_a_crash_a_new_process_lists_and_resumes_the_interrupted_checkpoint(ws, spawn):
    plan = ws.standard_plan()
    child = spawn("run", plan)
    wait_for_file(ws.started, child)
    child.kill()  # SIGKILL: no handler, no session-ended, the lock's holder record stays
    child.wait()
    assert "session-ended" not in log_kinds(ws)[-3:]
    assert resumable(ws, plan) == {"first": True, "wait": True, "last": False}
    listed = installengine("list", plan)
    assert "never completed: 'wait' has not completed in the current lineage" in listed.stdout
    ws.release.touch()
    resumed = installengine("run", plan, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from 'wait'" in resumed.stderr
    assert "lock-taken-over" in log_kinds(ws)
    assert resumable(ws, plan) == {"first": True, "wait": True, "last": True}
