"""Bad plans, bad options and foreign files: exit 2 and one `Error:` line, never a traceback."""

from __future__ import annotations

import pytest
from installengine.statemachine import (
    EngineError,
    EngineStateError,
    LogIntegrityError,
    NotResumableError,
    PlanError,
    RegistrationError,
    SchemaVersionError,
    SnapshotUnavailableError,
    TargetError,
    TargetLockedError,
    UsageError,
)
from installengine.statemachine.cli import exit_code_for

from .conftest import error_lines, installengine

BAD_PLANS = {
    "unknown-key": ('[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\ncolour = "red"\n',
                    "{path}: unknown key checkpoint[0].colour; allowed here: args, call, "
                    "description, kwargs, loglevel, name, version"),
    "unknown-engine-key": ('[engine]\ntargets = "dir:x"\n',
                           "{path}: unknown key engine.targets; allowed here: stop_on_error, "
                           "target"),
    "unknown-table": ('[engin]\ntarget = "dir:x"\n',
                      "{path}: unknown key engin; allowed here: checkpoint, engine"),
    "syntax": ('[[checkpoint]]\nname = "a"\ncall = \n',
               "{path}: invalid TOML: Invalid value (at line 3, column 8)"),
    "wrong-type": ('[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\nargs = "x"\n',
                   "{path}: checkpoint[0].args must be an array, not a string 'x'"),
    "wrong-engine-type": ('[engine]\nstop_on_error = "yes"\n',
                          "{path}: engine.stop_on_error must be true or false, not a string "
                          "'yes'"),
    "bool-loglevel": ('[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\nloglevel = true\n',
                      "{path}: checkpoint[0].loglevel must be a level name or number, not a "
                      "boolean True"),
    "bad-loglevel": ('[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\n'
                     'loglevel = "LOUD"\n',
                     "{path}: checkpoint[0].loglevel: checkpoint 'a': loglevel 'LOUD' is not a "
                     "logging level; use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number from 0"),
    "bad-name": ('[[checkpoint]]\nname = "lay down"\ncall = "cli_steps:record"\n',
                 "{path}: checkpoint[0].name: checkpoint name 'lay down' is invalid: use "
                 "1–256 ASCII letters, digits, '.', '-' or '_'"),
    "duplicate": ('[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\nargs = ["k"]\n'
                  '[[checkpoint]]\nname = "a"\ncall = "cli_steps:record"\nargs = ["k"]\n',
                  "{path}: checkpoint[1].name: 'a' is already the name of checkpoint[0]; "
                  "names are unique"),
    "no-call": ('[[checkpoint]]\nname = "a"\n',
                "{path}: checkpoint[0] has no call; every [[checkpoint]] needs a name and a "
                "call"),
    "no-checkpoints": ('[engine]\nstop_on_error = true\n',
                       "{path}: the plan has no checkpoints; add at least one [[checkpoint]] "
                       "table with a name and a call"),
    "call-does-not-import": (
        '[[checkpoint]]\nname = "a"\ncall = "no_such_steps:record"\n',
        "{path}: checkpoint[0].call: checkpoint 'a': cannot import module 'no_such_steps' "
        "(ModuleNotFoundError: No module named 'no_such_steps'); check the call reference and "
        "that the module is on the path"),
    "call-has-no-such-name": (
        '[[checkpoint]]\nname = "a"\ncall = "cli_steps:nothing_here"\n',
        "{path}: checkpoint[0].call: checkpoint 'a': module 'cli_steps' has no 'nothing_here'; "
        "check the call reference"),
    "args-do-not-fit": (
        '[[checkpoint]]\nname = "a"\ncall = "cli_steps:boom"\n',
        "{path}: checkpoint[0].args: checkpoint 'a': arguments do not fit "
        "cli_steps:boom(ctx: 'Context', message: 'str') -> 'None': missing a required argument: "
        "'message'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
@pytest.mark.parametrize("command", ["run", "list"])
def test_bad_plan_exits_2_with_one_error_line(ws, invoke, case, command):
    text, message = BAD_PLANS[case]
    path = ws.root / f"{case}.toml"
    path.write_text(text)
    result = invoke(command, path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"Error: {message.format(path=path)}"]
    assert result.stdout == ""
    assert not ws.target.exists()  # refused before anything touched a target


def test_missing_plan_file_exits_2(ws, invoke):
    result = invoke("run", ws.root / "nope.toml")
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"Error: plan file {ws.root / 'nope.toml'} does not exist; pass the path of a .toml plan"]


def test_unknown_checkpoint_exits_2(ws, invoke):
    result = invoke("run", ws.standard_plan(), "--pause-before", "nope")
    assert result.exit_code == 2
    assert error_lines(result) == ["Error: pause_before='nope' is not a registered checkpoint; "
                                   "registered: first, wait, last"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "{plan}", "--bogus"],
     "Error: No such option '--bogus'. (see 'installengine run --help')"),
    (["--bogus"], "Error: No such option '--bogus'. (see 'installengine --help')"),
    (["run", "{plan}", "--start-from", "first", "--resume"],
     "Error: --start-from and --resume cannot be used together; pick one "
     "(see 'installengine run --help')"),
    (["history", "--log", "x.db", "--kind", "nope"],
     "Error: Invalid value for '--kind': 'nope' is not one of"),
    (["history"], "Error: which log? pass --target T or --log FILE "
     "(see 'installengine history --help')"),
    (["prune", "--target", "dir:x", "--keep-last", "-1"],
     "Error: Invalid value for '--keep-last': -1 is not in the range x>=0."),
    (["nosuchcommand"], "Error: No such command 'nosuchcommand'."),
    (["run", "{plan}", "--target", "ftp:x"],
     "Error: target 'ftp:x' has unknown scheme 'ftp'; write it as zfs:pool/dataset, "
     "btrfs:/path, dir:/path or state:/path"),
])
def test_bad_option_exits_2_with_one_line(ws, invoke, args, message):
    plan = ws.standard_plan()
    result = invoke(*[a.format(plan=plan) for a in args])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(message)
    assert "Traceback" not in result.output


def test_a_file_that_is_not_a_log_exits_2(ws, invoke):
    foreign = ws.root / "notes.db"
    foreign.write_text("shopping list\n")
    for command in ("history", "verify"):
        result = invoke(command, "--log", foreign)
        assert result.exit_code == 2
        assert error_lines(result) == [
            f"Error: {foreign} is not an installengine log (not SQLite); pass the log.db in a "
            "target's .installengine directory"]


def test_a_sqlite_file_that_is_not_a_log_exits_2(ws, invoke):
    import sqlite3

    other = ws.root / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    result = invoke("verify", "--log", other)
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"Error: {other} is a SQLite file but not an installengine log (no events/meta tables); "
        "pass the log.db in a target's .installengine directory"]


def test_debug_shows_the_traceback_too(ws, invoke):
    result = invoke("--debug", "run", ws.root / "nope.toml")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: plan file")


def test_the_installed_command_prints_one_line_for_a_bad_plan(ws):
    bad = ws.root / "bad.toml"
    bad.write_text("[[checkpoint]]\nname = 'a'\n")
    done = installengine("run", bad)
    assert done.returncode == 2
    assert done.stderr == (f"Error: {bad}: checkpoint[0] has no call; every [[checkpoint]] "
                           "needs a name and a call\n")


@pytest.mark.parametrize(("error", "code"), [
    (PlanError("x", path="p"), 2), (UsageError("x"), 2), (RegistrationError("x"), 2),
    (EngineStateError("x", state="running", allowed=[]), 2), (LogIntegrityError("x"), 2),
    (SchemaVersionError("x", found=9, supported=1), 2), (TargetError("x"), 2),
    (NotResumableError("x", checkpoint="c", reason="r"), 3),
    (TargetLockedError("x", holder={}), 3), (SnapshotUnavailableError("x"), 1),
    (EngineError("x"), 1), (RuntimeError("x"), 1),
])
def test_exit_code_table(error, code):
    assert exit_code_for(error) == code
