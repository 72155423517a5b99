"""`list`, `history` and `verify`: what they show, and that they never write to the log."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from installengine.eventlog import EventLog

from .conftest import cli_json, error_lines, json_lines


@pytest.fixture
def paused(ws, invoke):
    """The standard plan, run and paused before 'last'; returns the plan path."""
    plan = ws.standard_plan()
    ws.release.touch()
    assert invoke("run", plan, "--pause-before", "last").exit_code == 0
    return plan


def file_digests(ws) -> dict[str, str]:
    state = ws.target / ".installengine"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [state / "log.db", *sorted((state / "snapshots").glob("*"))]
            if p.is_file()}


def test_list_marks_resumable_checkpoints_with_x(ws, invoke, paused):
    result = invoke("list", paused)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Checkpoint  Resumable  Description       Reason",
        "first       X          record first",
        "wait        X          wait for release",
        "last        X",
    ]


def test_list_json_after_a_failure(ws, invoke):
    plan = ws.plan([{"name": "ok", "call": "cli_steps:record", "args": ["ok"]},
                    {"name": "bad", "call": "cli_steps:boom", "args": ["no"]},
                    {"name": "later", "call": "cli_steps:record", "args": ["later"],
                     "description": "after the failure"}])
    assert invoke("run", plan).exit_code == 1
    result = invoke("list", plan, "--json")
    assert result.exit_code == 0
    assert cli_json(result) == [
        {"name": "ok", "resumable": True, "reason": None, "description": ""},
        {"name": "bad", "resumable": True, "reason": None, "description": ""},
        {"name": "later", "resumable": False, "description": "after the failure",
         "reason": "predecessor 'bad' failed; resume from 'bad' first"},
    ]


def test_list_reports_a_changed_registration(ws, invoke, paused):
    changed = ws.plan([
        {"name": "first", "call": "cli_steps:record", "args": ["first"]},
        {"name": "wait", "call": "cli_steps:record", "args": ["wait"], "version": "2"},
        {"name": "last", "call": "cli_steps:record", "args": ["last"]},
    ], name="changed.toml")
    verdicts = cli_json(invoke("list", changed, "--json"))
    # A changed checkpoint is itself resumable (from its predecessor's point); nothing after.
    assert [v["resumable"] for v in verdicts] == [True, True, False]
    assert verdicts[2]["reason"] == (
        "registration mismatch: 'wait' is registered differently (call, arguments or version) "
        "from the run that completed it")


def test_list_before_anything_ran_touches_nothing(ws, invoke):
    plan = ws.standard_plan()
    result = invoke("list", plan, "--json")
    assert [v["resumable"] for v in cli_json(result)] == [True, False, False]
    assert not ws.target.exists()


def test_list_agrees_with_the_engine_after_a_restart(ws, invoke, paused, open_engine):
    listed = [(v["name"], v["resumable"], v["reason"])
              for v in cli_json(invoke("list", paused, "--json"))]
    from installengine.statemachine.plan import load_plan, register_plan

    engine = open_engine(ws.spec)
    register_plan(engine, load_plan(paused))
    assert listed == [(v.name, v.resumable, v.reason) for v in engine.explain()]


def test_history_filters_and_prints_json_lines_of_event_fields(ws, invoke, paused):
    result = invoke("history", "--target", ws.spec, "--kind", "checkpoint-completed", "--json")
    assert result.exit_code == 0
    events = json_lines(result.stdout)
    assert [e["checkpoint"] for e in events] == ["first", "wait"]
    assert set(events[0]) == {"seq", "session", "ts", "kind", "checkpoint", "data",
                              "prev_hash", "hash"}
    one = invoke("history", "--log", ws.log, "--checkpoint", "wait", "--json")
    assert {e["checkpoint"] for e in json_lines(one.stdout)} == {"wait"}
    session = events[0]["session"]
    mine = json_lines(invoke("history", "--log", ws.log, "--session", session,
                             "--json").stdout)
    assert mine
    assert {e["session"] for e in mine} == {session}


def test_history_limit_last_and_time_range(ws, invoke, paused):
    every = json_lines(invoke("history", "--log", ws.log, "--json").stdout)
    first3 = json_lines(invoke("history", "--log", ws.log, "--limit", "3", "--json").stdout)
    last3 = json_lines(invoke("history", "--log", ws.log, "--last", "3", "--json").stdout)
    assert first3 == every[:3]
    assert last3 == every[-3:]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert invoke("history", "--log", ws.log, "--since", later).stdout == ""
    assert len(json_lines(invoke("history", "--log", ws.log, "--until", later,
                                 "--json").stdout)) == len(every)
    bad = invoke("history", "--log", ws.log, "--since", "yesterday")
    assert bad.exit_code == 2
    assert error_lines(bad) == ["Error: since='yesterday' is not an ISO-8601 time"]


def test_history_human_lines(ws, invoke, paused):
    lines = invoke("history", "--log", ws.log, "--kind", "snapshot-taken").stdout.splitlines()
    assert len(lines) == 4  # before and after 'first' and 'wait'
    assert "before point, durable, digest" in lines[0]
    assert "fs .step_first.before" in lines[0]


def test_verify_ok_exits_0(ws, invoke, paused):
    result = invoke("verify", "--target", ws.spec)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "OK"
    report = cli_json(invoke("verify", "--log", ws.log, "--json"))
    assert report == {"ok": True, "first_bad_seq": None, "reason": None, "snapshots": [],
                      "fs_snapshots": []}  # a log alone: no target to look at


def test_verify_names_a_filesystem_snapshot_removed_by_hand(ws, invoke, paused):
    report = cli_json(invoke("verify", "--target", ws.spec, "--json"))
    assert report["ok"] is True
    # paused before 'last': first, wait completed; the points share snapshots pairwise
    assert [(f["name"], f["point"], f["ok"]) for f in report["fs_snapshots"]] == [
        (".step_first.before", "before first", True),
        (".step_first.done", "first completed", True),
        (".step_wait.done", "wait completed", True)]
    assert "filesystem snapshots: 3, the target holds every one" in invoke(
        "verify", "--target", ws.spec).stdout
    shutil.rmtree(ws.target / ".installengine" / "fs" / ".step_first.done")
    result = invoke("verify", "--target", ws.spec, "--json")
    assert result.exit_code == 1
    report = cli_json(result)
    assert report["ok"] is False
    assert report["first_bad_seq"] is None  # the log itself is intact
    assert [f["name"] for f in report["fs_snapshots"] if not f["ok"]] == [".step_first.done"]
    human = invoke("verify", "--target", ws.spec)
    assert human.exit_code == 1
    assert ("filesystem snapshot .step_first.done (first completed): MISSING from the target"
            in human.stdout)
    assert human.stdout.splitlines()[-1] == "FAILED"


def test_verify_fails_after_one_byte_of_the_log_changes(ws, invoke, paused):
    raw = bytearray(ws.log.read_bytes())
    # One byte inside a stored event: the description 'wait for release' becomes 'wait for relexse'.
    at = raw.index(b"wait for release") + len("wait for rel")
    raw[at] = ord("x")
    ws.log.write_bytes(bytes(raw))
    with EventLog.open(ws.log, readonly=True) as log:
        bad = log.verify().first_bad_seq
    assert bad is not None
    result = invoke("verify", "--log", ws.log)
    assert result.exit_code == 1
    assert (f"MISMATCH at event {bad}: event {bad} has been altered (hash mismatch); events "
            f"before {bad} are intact") in result.stdout
    assert result.stdout.splitlines()[-1] == "FAILED"
    report = cli_json(invoke("verify", "--log", ws.log, "--json"))
    assert report["ok"] is False
    assert report["first_bad_seq"] == bad


def test_verify_names_a_corrupt_snapshot_file_and_that_the_log_rebuilds_it(ws, invoke):
    # 300 KiB of changes: enough that the engine writes a snapshot file (a cache of the log).
    plan = ws.plan([{"name": "big", "call": "cli_steps:big", "args": [300]},
                    {"name": "after", "call": "cli_steps:record", "args": ["after"]}])
    assert invoke("run", plan).exit_code == 0
    [snapshot] = sorted((ws.target / ".installengine" / "snapshots").glob("*.json"))
    text = snapshot.read_bytes()
    snapshot.write_bytes(text.replace(b"xxxx", b"xxxy", 1))
    result = invoke("verify", "--target", ws.spec, "--json")
    assert result.exit_code == 1
    assert cli_json(result)["snapshots"] == [
        {"file": str(snapshot), "ok": False, "rebuildable": True}]
    human = invoke("verify", "--target", ws.spec)
    assert f"snapshot file {snapshot}: MISMATCH (the log can rebuild it)" in human.stdout


@pytest.mark.parametrize("command", [
    ["list", "{plan}"], ["list", "{plan}", "--json"],
    ["history", "--target", "{spec}"], ["history", "--log", "{log}", "--json"],
    ["verify", "--target", "{spec}"], ["verify", "--log", "{log}", "--json"],
    ["prune", "--target", "{spec}", "--keep-last", "0"],
])
def test_read_only_commands_leave_the_log_and_snapshot_files_byte_for_byte(ws, invoke, command):
    plan = ws.plan([{"name": "big", "call": "cli_steps:big", "args": [300]},
                    {"name": "after", "call": "cli_steps:record", "args": ["after"]}])
    assert invoke("run", plan, "--pause-before", "after").exit_code == 0
    before = file_digests(ws)
    assert any(name.endswith(".json") for name in before)
    args = [a.format(plan=plan, spec=ws.spec, log=ws.log) for a in command]
    assert invoke(*args).exit_code == 0
    assert file_digests(ws) == before


def test_read_only_commands_run_while_an_install_holds_the_target(ws, invoke, paused,
                                                                  open_engine):
    open_engine(ws.spec)  # holds the lock, as a running install would
    assert invoke("list", paused).exit_code == 0
    assert invoke("history", "--target", ws.spec, "--last", "1").exit_code == 0
    assert invoke("verify", "--target", ws.spec).exit_code == 0


def test_history_of_a_target_without_a_log_exits_2(ws, invoke):
    result = invoke("history", "--target", ws.spec)
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"Error: no log at {ws.log}; pass the path of an installengine log.db"]


def test_verify_json_is_one_object(ws, invoke, paused):
    out = invoke("verify", "--log", ws.log, "--json").stdout
    assert len(out.splitlines()) == 1
    assert isinstance(json.loads(out), dict)
