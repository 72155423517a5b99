"""Hostile command lines: every failure is exit 2 or 3 with one `Error:` line, never a traceback.

Hypothesis builds argv lists from the real commands (or random text), the real
options with hostile values (unicode, ``../x``, empty, very long, negative
numbers, bad dates, unknown target schemes, paths of files that are not logs)
and a plan that is valid, missing or broken, and runs them in this process
with click's CliRunner. A durable log made once per test must come out of every
refused command as it went in: what was recorded stays, and a read-only or
refused command adds no event of its own beyond the bookkeeping of the session
it opened.

Every path a command can reach stays under the test's tmp_path: the working
directory is a directory two levels below it, no generated path starts with
``/`` or ``~`` or climbs more than two levels, and no zfs: or btrfs: spec names
anything that exists.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from installengine.eventlog import EventKind, EventLog
from installengine.statemachine.cli import cli

CLI_ARGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

COMMANDS = ["run", "list", "history", "verify", "cleanup", "prune", "gc", "diagram"]
#: commands that take a PLAN argument
PLAN_COMMANDS = {"run", "list", "cleanup"}
#: what an engine records just by opening on a target and registering the plan; a refused
#: run, cleanup or prune --confirm may leave these and nothing else
SESSION_BOOKKEEPING = {EventKind.SESSION_STARTED, EventKind.TARGET_ATTACHED,
                       EventKind.CHECKPOINT_REGISTERED, EventKind.SESSION_ENDED}


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], *,
           one_in: int = 4) -> st.SearchStrategy[Any]:
    """``rare`` once in ``one_in`` draws, else ``common``: commands get past their first check."""
    return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else common)


#: no "/" (nothing absolute, no climbing), no "~" (expanduser would leave tmp_path), no NUL
#: (an argv cannot hold one); surrogates are added on purpose below, as argv bytes decode
SAFE_CHARS = st.characters(blacklist_characters="/~\x00", blacklist_categories=("Cs",))
WORD = st.text(SAFE_CHARS, max_size=30)
HOSTILE_TEXT = st.sampled_from([
    "", " ", "-", "--", "../x", "..", ".", "é", "名前", "a b", "a\nb", "a\tb", "$(id)", "ok\u202e",
    "-1", "0", "99999999999999999999", "None", "null", "x" * 300, "x" * 5000, "\udcff", "\ufeff",
])
TEXT = HOSTILE_TEXT | WORD
NUMBERS = mostly(st.integers(0, 5).map(str),
                 st.integers(-(10**20), 10**20).map(str)
                 | st.sampled_from(["-1", "", "1.5", "x", "\u0663", "1_000", " 2", "+3", "0x10"]))
TIMES = mostly(st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
               st.sampled_from(["2020-01-01", "2020-13-45", "yesterday", "", "-1", "99999-01-01",
                                "2020-01-01T25:00", "1e10", "0", "now",
                                "2020-01-01T00:00:00+99:00", "\udcff"]) | WORD)
KINDS = mostly(st.sampled_from(sorted(k.value for k in EventKind)), TEXT)
NAMES = mostly(st.sampled_from(["first", "second", "third"]), TEXT)
FLAGS = {"--resume", "--dry-run", "--json", "--confirm", "--debug"}

#: where the command finds its log: without one it stops at its first check, so it gets one
#: nine times in ten
WHERE_OPTIONS = {"history": ["--log", "--target"], "verify": ["--log", "--target"],
                 "prune": ["--target"]}
#: the options each command really has; the others are drawn too, less often
OWN_OPTIONS = {
    "run": ["--target", "--start-from", "--resume", "--pause-before", "--dry-run", "--json"],
    "list": ["--target", "--json"],
    "history": ["--target", "--log", "--session", "--kind", "--checkpoint", "--since", "--until",
                "--limit", "--last", "--json"],
    "verify": ["--target", "--log", "--json"],
    "cleanup": ["--target"],
    "prune": ["--target", "--keep-last", "--confirm", "--json"],
    "gc": ["--dry-run"],
    "diagram": [],
}
ALL_OPTIONS = sorted({o for opts in OWN_OPTIONS.values() for o in opts} | FLAGS)


@dataclass(frozen=True)
class Place:
    """One test's files: the durable target and its log, plans, and files that are no log."""

    root: Path
    cwd: Path

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def spec(self) -> str:
        return f"dir:{self.target}"

    @property
    def log(self) -> Path:
        return self.target / ".installengine" / "log.db"

    def head(self) -> tuple[int, str]:
        with EventLog.open(self.log, readonly=True) as log:
            return log.head


def invoke(argv: list[str]) -> Result:
    """Run the CLI in-process, as the console script would; undo what --debug set up.

    ``--debug`` hangs a handler on the ``installengine`` logger that writes to the
    runner's stderr; a real process ends with it, here the next example would inherit
    it (and its closed stream), so it is removed again.
    """
    logger = logging.getLogger("installengine")
    handlers, level = list(logger.handlers), logger.level
    try:
        return CliRunner().invoke(cli, argv, catch_exceptions=True)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


PLAN_TEXT = """\
[engine]
target = {target}

[[checkpoint]]
name = "first"
call = "tests.faults.steps:put"
args = ["first", 1]
description = "put first"

[[checkpoint]]
name = "second"
call = "tests.faults.steps:put"
args = ["second", 2]

[[checkpoint]]
name = "third"
call = "tests.faults.steps:put"
args = ["third", 3]
"""


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Place:
    """A durable log (the plan run once, paused before 'third') and a cwd deep in tmp_path."""
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # belt and braces for any "~"
    p = Place(tmp_path, cwd)
    (tmp_path / "plan.toml").write_text(PLAN_TEXT.format(target=f'"{p.spec}"'))
    (tmp_path / "broken.toml").write_text("[[checkpoint]]\nname = 'a'\ncall = \n")
    (tmp_path / "no-call.toml").write_text("[[checkpoint]]\nname = 'a'\n")
    (tmp_path / "bad-call.toml").write_text(
        "[[checkpoint]]\nname = 'a'\ncall = 'no_such_module_here:f'\n")
    (tmp_path / "no-target.toml").write_text(PLAN_TEXT.replace("target = {target}\n", ""))
    (tmp_path / "notes.txt").write_text("shopping list\n")
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "a-dir").mkdir()
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    made = invoke(["run", str(tmp_path / "plan.toml"), "--pause-before", "third"])
    assert made.exit_code == 0, made.output
    assert p.head()[0] > 0
    return p


#: odd strings for any path: long components (NAME_MAX is 255 bytes), empty, a dash, a byte
#: that is not UTF-8, a parent
ODD_PATHS = ["x" * 300, "x" * 5000, "x" * 300 + "/log.db", "a/" + "x" * 256, "", "-", "\udcff",
             "é/名前", "../x"]


def _targets(p: Place) -> st.SearchStrategy[str]:
    schemes = ["dir:", "zfs:", "btrfs:", "state:", ":", "dir", "nfs:/x", "ftp:x", "DIR:x",
               " dir:x", "dir::x", "dir:-x", "zfs:no-such-pool-installengine-test/ds", "zfs:/abs",
               "zfs:a@b", "zfs:../x", f"dir:{p.target}/"]
    not_targets = [f"dir:{p.root / 'notes.txt'}", f"state:{p.root / 'notes.txt'}",
                   f"dir:{p.root / 'a-dir'}", "btrfs:rel", f"btrfs:{p.root / 'a-dir'}"]
    odd = st.sampled_from(["dir:", "state:", "btrfs:"]).flatmap(
        lambda scheme: st.sampled_from(ODD_PATHS).map(scheme.__add__))
    return mostly(st.sampled_from([p.spec, p.spec, f"state:{p.log.parent}"])
                  | WORD.map("dir:".__add__),
                  st.sampled_from(schemes) | st.sampled_from(not_targets) | odd
                  | WORD.map("state:".__add__) | TEXT, one_in=3)


def _logs(p: Place) -> st.SearchStrategy[str]:
    r = p.root
    not_logs = ["../../target/.installengine/log.db", r / "nope.db", r / "a-dir",
                r / "notes.txt", r / "empty.db", r / "other.db", r / "plan.toml", f"{p.log}-wal",
                f"{p.log}-shm", p.log.parent]
    return mostly(st.just(str(p.log)),
                  st.sampled_from([str(f) for f in not_logs]) | st.sampled_from(ODD_PATHS) | WORD,
                  one_in=3)


def _plans(p: Place) -> st.SearchStrategy[str]:
    r = p.root
    not_plans = [r / "no-target.toml", r / "nope.toml", r / "broken.toml", r / "no-call.toml",
                 r / "bad-call.toml", r / "a-dir", r / "notes.txt", r / "empty.db"]
    return mostly(st.just(str(r / "plan.toml")),
                  st.sampled_from([str(f) for f in not_plans]) | st.sampled_from(ODD_PATHS) | WORD)


@st.composite
def argvs(draw: st.DrawFn, p: Place) -> list[str]:
    """An argv for ``installengine``: [--debug] COMMAND [PLAN] OPTION..."""
    values: dict[str, st.SearchStrategy[str]] = {
        "--target": _targets(p), "--log": _logs(p), "--start-from": NAMES,
        "--pause-before": NAMES, "--session": NAMES, "--checkpoint": NAMES,
        "--kind": KINDS, "--since": TIMES, "--until": TIMES, "--keep-last": NUMBERS,
        "--limit": NUMBERS, "--last": NUMBERS,
    }
    argv: list[str] = []
    if draw(st.integers(0, 3)) == 0:
        argv.append("--debug")
    # run twice as often as the rest: it has the most options and the most ways to refuse
    command = draw(mostly(st.sampled_from([*COMMANDS, "run"]),
                          TEXT.filter(lambda t: t not in (*COMMANDS, "demo")), one_in=8))
    argv.append(command)
    takes_plan = command in PLAN_COMMANDS
    if draw(st.integers(0, 19)) < (19 if takes_plan else 1):
        argv.append(draw(_plans(p)))
    if command in WHERE_OPTIONS and draw(st.integers(0, 9)):
        option = draw(st.sampled_from(WHERE_OPTIONS[command]))
        argv += [option, draw(values[option])]
    own = OWN_OPTIONS.get(command, [])
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(own) if own and draw(st.integers(0, 9)) else
                      st.sampled_from(ALL_OPTIONS))
        if option in FLAGS:
            argv.append(option)
        elif draw(st.integers(0, 19)) == 0:
            argv.append(option)  # its value left out: the next token (or nothing) is taken
        elif draw(st.integers(0, 4)) == 0:
            argv.append(f"{option}={draw(values[option])}")
        else:
            argv += [option, draw(values[option])]
    if draw(st.integers(0, 19)) == 0:
        argv.append(draw(TEXT))  # a stray argument
    return argv


def _command(argv: list[str]) -> str | None:
    rest = argv[1:] if argv[:1] == ["--debug"] else argv
    return rest[0] if rest else None


def may_write(argv: list[str], exit_code: int) -> bool:
    """Whether this command, having run (exit 0 or 1), may legitimately append to the log."""
    command = _command(argv)
    if exit_code not in (0, 1):
        return False
    return command in ("run", "cleanup") or (command == "prune" and "--confirm" in argv)


def opens_an_engine(argv: list[str]) -> bool:
    """Whether this command opens an engine on a target before it can refuse."""
    command = _command(argv)
    return command in ("run", "cleanup") or (command == "prune" and "--confirm" in argv)


def check_outcome(argv: list[str], result: Result) -> None:
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (argv, repr(exc))
    assert result.exit_code in (0, 1, 2, 3), (argv, result.exit_code, result.output)
    out, err = result.stdout, result.stderr
    if "--debug" not in argv:
        assert "Traceback" not in out + err, (argv, out, err)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    unexpected = [line for line in errors if line.startswith("Error: unexpected ")]
    assert not unexpected, (argv, unexpected)
    if result.exit_code in (2, 3):
        assert len(errors) == 1, (argv, err)
        assert err.splitlines()[-1] == errors[0], (argv, err)
        assert errors[0].removeprefix("Error:").strip(), (argv, err)
    elif result.exit_code == 0:
        assert errors == [], (argv, err)
    else:
        assert len(errors) <= 1, (argv, err)


def check_log(p: Place, argv: list[str], result: Result, before: tuple[int, str]) -> None:
    """What was recorded is intact; only a command that ran may have added more."""
    with EventLog.open(p.log, readonly=True) as log:
        assert log.verify().ok, argv
        kept = log.get(before[0])
        assert kept is not None, argv
        assert kept.hash == before[1], argv  # nothing rewritten
        added = [ev.kind for ev in log.query(after_seq=before[0])]
    if may_write(argv, result.exit_code):
        return
    if result.exit_code in (2, 3) and opens_an_engine(argv):
        assert set(added) <= SESSION_BOOKKEEPING, (argv, added, result.stderr)
        return
    assert added == [], (argv, result.exit_code, added, result.output)


@CLI_ARGS
@given(data=st.data())
def test_a_hostile_command_line_exits_0_to_3_with_one_error_line_and_keeps_the_log(
        place: Place, data: st.DataObject) -> None:
    argv = data.draw(argvs(place), label="argv")
    before = place.head()
    missing_log = next((Path(v) for o, v in itertools.pairwise(argv)
                        if o == "--log" and v.endswith("nope.db")), None)
    result = invoke(argv)
    command = _command(argv)
    event(f"{command if command in COMMANDS else 'other'} exit {result.exit_code}")
    check_outcome(argv, result)
    check_log(place, argv, result, before)
    if missing_log is not None:
        assert not missing_log.exists(), argv  # a read-only open never creates a log


@pytest.mark.parametrize("argv", [
    ["gc"], ["gc", "--dry-run"], ["diagram"], ["--help"], ["run", "--help"], ["--version"],
    ["list", "{plan}"], ["list", "{plan}", "--json"], ["history", "--log", "{log}", "--json"],
    ["verify", "--target", "{spec}"], ["prune", "--target", "{spec}", "--keep-last", "0"],
])
def test_read_only_and_help_commands_exit_0_and_add_no_event(place: Place, argv: list[str]) -> None:
    argv = [a.format(plan=place.root / "plan.toml", log=place.log, spec=place.spec) for a in argv]
    before = place.head()
    result = invoke(argv)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert place.head() == before


@pytest.mark.parametrize(("argv", "code"), [
    (["run", "{plan}", "--start-from", "nope"], 2),
    (["run", "{plan}", "--pause-before", "first", "--start-from", "third"], 2),
    (["run", "{plan}", "--start-from", "third", "--resume"], 2),
    (["run", "{plan}", "--target", "nfs:/x"], 2),
    (["run", "{plan}", "--target", "dir:"], 2),
    (["cleanup", "{plan}", "--target", "zfs:"], 2),
    (["prune", "--target", "{spec}", "--keep-last", "-1", "--confirm"], 2),
    (["history", "--log", "{root}/notes.txt"], 2),
    (["verify", "--log", "{root}/other.db"], 2),
    (["run", "{root}/broken.toml"], 2),
])
def test_a_refused_command_exits_with_its_code_and_records_no_operation(
        place: Place, argv: list[str], code: int) -> None:
    argv = [a.format(plan=place.root / "plan.toml", spec=place.spec, root=place.root)
            for a in argv]
    before = place.head()
    result = invoke(argv)
    assert result.exit_code == code, result.output
    check_outcome(argv, result)
    check_log(place, argv, result, before)


def test_a_not_resumable_start_from_exits_3_and_records_no_execution(place: Place) -> None:
    # Rolled back to before 'first' and paused before 'second': the run that completed
    # 'second' is abandoned, so 'third' has no before-point in the current lineage.
    plan = str(place.root / "plan.toml")
    assert invoke(["run", plan, "--start-from", "first", "--pause-before", "second"]
                  ).exit_code == 0
    before = place.head()
    result = invoke(["run", plan, "--start-from", "third"])
    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines() == [
        "Error: cannot resume from 'third': never completed: 'second' has not completed in the "
        "current lineage; resume from 'second' or run without --start-from"]
    check_log(place, ["run", plan, "--start-from", "third"], result, before)


@pytest.mark.parametrize("option", ["--session", "--checkpoint"])
def test_history_filter_with_a_non_utf8_byte_is_a_usage_error(place: Place, option: str) -> None:
    # The shell's `installengine history --log LOG --session $'\xff'`: Python decodes the
    # byte 0xff of argv as the surrogate U+DCFF.
    argv = ["history", "--log", str(place.log), option, "\udcff"]
    result = invoke(argv)
    assert result.exit_code == 2, result.stderr
    check_outcome(argv, result)


@pytest.mark.parametrize("argv", [
    ["history", "--log", "x" * 300], ["verify", "--log", "x" * 300 + "/log.db"],
    ["verify", "--target", "dir:" + "x" * 300], ["history", "--target", "state:" + "x" * 300],
    ["list", "{plan}", "--target", "dir:" + "x" * 300],
    ["prune", "--target", "dir:" + "x" * 300, "--confirm"],
])
def test_a_too_long_path_is_a_usage_error(place: Place, argv: list[str]) -> None:
    argv = [a.format(plan=place.root / "plan.toml") for a in argv]
    before = place.head()
    result = invoke(argv)
    assert result.exit_code == 2, result.stderr
    check_outcome(argv, result)
    check_log(place, argv, result, before)


def test_too_long_names_and_paths_are_refused_cleanly_elsewhere(place: Place) -> None:
    # The same 300-byte component where the commands do check it: exit 2, one line.
    plan = str(place.root / "plan.toml")
    for argv in (["run", plan, "--target", "dir:" + "x" * 300],
                 ["cleanup", plan, "--target", "state:" + "x" * 300], ["run", "x" * 300],
                 ["run", plan, "--start-from", "x" * 300]):
        before = place.head()
        result = invoke(argv)
        assert result.exit_code == 2, (argv, result.stderr)
        check_outcome(argv, result)
        check_log(place, argv, result, before)
