"""The installed `installengine` command end to end: one install on a dir: target, many processes.

Every step is a new process, as an operator's shell would run it: pause, list,
refuse, roll back, fail, refuse bad input, read the history, verify, and find
one changed byte in the log. Each step asserts its exact exit code and the
lines that matter.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from installengine.eventlog import EventLog

from .conftest import Workspace, installengine, json_lines

#: a description only the failing plan has: it lands in exactly one event of the log
UNIQUE = "only in the failing plan"
EVENT_FIELDS = {"seq", "session", "ts", "kind", "checkpoint", "data", "prev_hash", "hash"}
#: what a pause, a roll back and a failure leave in the history, at least
EXPECTED_KINDS = {
    "session-started", "target-attached", "checkpoint-registered", "execution-started",
    "checkpoint-started", "cache-changed", "checkpoint-completed", "checkpoint-failed",
    "snapshot-taken", "paused", "rolled-back", "execution-finished", "session-ended",
}


def plans(ws: Workspace) -> tuple[Path, Path]:
    """The install (first..fourth) and the same install with a 'third' that fails."""
    checkpoints = [
        {"name": "first", "call": "cli_steps:record", "args": ["first"],
         "description": "record first"},
        {"name": "second", "call": "cli_steps:record", "args": ["second"]},
        {"name": "third", "call": "cli_steps:record", "args": ["third"]},
        {"name": "fourth", "call": "cli_steps:record", "args": ["fourth"]},
    ]
    failing = [*checkpoints[:2],
               {"name": "third", "call": "cli_steps:boom", "args": ["disk on fire"]},
               {**checkpoints[3], "description": UNIQUE}]
    return ws.plan(checkpoints), ws.plan(failing, name="failing.toml")


def resumable(ws: Workspace, plan: Path) -> list[tuple[str, bool, str | None]]:
    listed = installengine("list", plan, "--json", cwd=ws.root)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    return [(v["name"], v["resumable"], v["reason"]) for v in json.loads(listed.stdout)]


def head(ws: Workspace) -> tuple[int, str]:
    with EventLog.open(ws.log, readonly=True) as log:
        return log.head


def test_an_install_pauses_resumes_fails_and_verify_finds_one_changed_byte(ws: Workspace) -> None:
    plan, failing = plans(ws)

    # Pause before 'third': exit 0, and the way to continue.
    paused = installengine("run", plan, "--pause-before", "third", cwd=ws.root)
    assert paused.returncode == 0, paused.stderr
    assert paused.stderr == ""
    assert paused.stdout.splitlines()[-1] == (
        f"Paused before 'third'. Continue with: installengine run {plan} --resume")
    assert "completed first" in paused.stdout.splitlines()
    assert "completed second" in paused.stdout.splitlines()
    assert not (ws.target / "third.txt").exists()

    # A new process sees the durable points: up to 'third', not 'fourth'.
    assert resumable(ws, plan) == [
        ("first", True, None), ("second", True, None), ("third", True, None),
        ("fourth", False, "never completed: 'third' has not completed in the current lineage"),
    ]

    # A checkpoint that never completed cannot be resumed: exit 3, one line, nothing run.
    refused = installengine("run", plan, "--start-from", "fourth", cwd=ws.root)
    assert refused.returncode == 3
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "Error: cannot resume from 'fourth': never completed: 'third' has not completed in the "
        "current lineage; resume from 'third' or run without --start-from"]
    assert not (ws.target / "fourth.txt").exists()

    # From an earlier checkpoint: roll back to before 'second', run to the end.
    again = installengine("run", plan, "--start-from", "second", cwd=ws.root)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    rolled = re.fullmatch(r"rolled back to before second \(event (\d+)\)", lines[0])
    assert rolled, lines
    assert [line for line in lines if line.startswith("completed ")] == [
        "completed second", "completed third", "completed fourth"]
    assert lines[-1] == "Done: every checkpoint requested completed."
    assert (ws.target / "fourth.txt").read_text() == "fourth=True\n"
    assert [r for _, r, _ in resumable(ws, plan)] == [True, True, True, True]

    # 'third' changed and now fails: exit 1, one Error line, and how to retry.
    failed = installengine("run", failing, "--start-from", "third", cwd=ws.root)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "Error: checkpoint failed: 'third' (ValueError: disk on fire)"]
    assert "FAILED    third: ValueError: disk on fire" in failed.stdout.splitlines()
    assert failed.stdout.splitlines()[-1] == (
        f"Fix the cause, then retry with: installengine run {failing} --start-from third")
    assert resumable(ws, failing)[3] == (
        "fourth", False, "predecessor 'third' failed; resume from 'third' first")

    # Bad input is refused before anything opens the log: exit 2, one line, no traceback.
    recorded = head(ws)
    unknown = installengine("run", plan, "--frobnicate", cwd=ws.root)
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert unknown.stderr == "Error: No such option '--frobnicate'. (see 'installengine run --help')\n"
    bad = ws.root / "bad.toml"
    bad.write_text(f'[engine]\ntarget = "{ws.spec}"\n\n[[checkpoint]]\nname = "a"\n'
                   'call = "cli_steps:record"\nargs = "a"\n')
    message = f"Error: {bad}: checkpoint[0].args must be an array, not a string 'a'"
    badly = installengine("run", bad, cwd=ws.root)
    assert badly.returncode == 2
    assert badly.stderr == message + "\n"
    assert "Traceback" not in badly.stdout + badly.stderr
    debug = installengine("--debug", "run", bad, cwd=ws.root)
    assert debug.returncode == 2
    debug_lines = debug.stderr.splitlines()
    assert debug_lines[0] == "Traceback (most recent call last):"
    assert f"installengine.statemachine.errors.PlanError: {message[len('Error: '):]}" in debug_lines
    assert debug_lines[-1] == message
    assert head(ws) == recorded

    # The history: JSON Lines of Event fields, a gap-free hash chain, every kind this flow made.
    history = installengine("history", "--target", ws.spec, "--json", cwd=ws.root)
    assert history.returncode == 0, history.stderr
    events = json_lines(history.stdout)
    assert len(events) == len(history.stdout.splitlines()) == recorded[0]
    assert all(set(e) == EVENT_FIELDS for e in events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(events))
    assert {e["kind"] for e in events} >= EXPECTED_KINDS
    # the first roll back is the --start-from second one; the failing run made the second
    rollback, _ = [e for e in events if e["kind"] == "rolled-back"]
    assert rollback["data"]["to"] == int(rolled.group(1))
    assert events[rollback["data"]["to"] - 1]["kind"] == "snapshot-taken"
    assert events[rollback["data"]["to"] - 1]["checkpoint"] == "second"
    [marked] = [e["seq"] for e in events if UNIQUE in json.dumps(e["data"], ensure_ascii=False)]

    # An intact log verifies.
    verified = installengine("verify", "--target", ws.spec, cwd=ws.root)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[0] == (
        f"log {ws.log}: {len(events)} events, hash chain intact")
    assert verified.stdout.splitlines()[-1] == "OK"
    report = json.loads(installengine("verify", "--log", ws.log, "--json", cwd=ws.root).stdout)
    assert {"ok", "first_bad_seq", "reason", "snapshots"} <= set(report)
    assert (report["ok"], report["first_bad_seq"], report["reason"], report["snapshots"]) == (
        True, None, None, [])

    # One byte inside that event's data changes ('failing' -> 'Failing'): every process has
    # ended and closed the log, so its WAL is checkpointed into log.db and gone.
    wal = Path(f"{ws.log}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    raw = bytearray(ws.log.read_bytes())
    assert raw.count(UNIQUE.encode()) == 1
    at = raw.index(UNIQUE.encode()) + len("only in the ")
    assert raw[at] == ord("f")
    raw[at] = ord("F")
    ws.log.write_bytes(bytes(raw))
    broken = installengine("verify", "--target", ws.spec, cwd=ws.root)
    assert broken.returncode == 1
    assert broken.stdout.splitlines()[0] == (
        f"log {ws.log}: MISMATCH at event {marked}: event {marked} has been altered (hash "
        f"mismatch); events before {marked} are intact")
    assert broken.stdout.splitlines()[-1] == "FAILED"
    as_json = installengine("verify", "--log", ws.log, "--json", cwd=ws.root)
    assert as_json.returncode == 1
    assert len(as_json.stdout.splitlines()) == 1
    report = json.loads(as_json.stdout)
    assert {"ok", "first_bad_seq", "reason", "snapshots"} <= set(report)
    assert (report["ok"], report["first_bad_seq"], report["reason"], report["snapshots"]) == (
        False, marked, f"event {marked} has been altered (hash mismatch)", [])
