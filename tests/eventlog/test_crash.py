"""Crash safety for real: a process appending to a durable log is SIGKILLed at random moments."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from installengine.eventlog import EventLog, VerifyReport

TRIALS = 24
SEED = 20_260_512

# Prints every seq only after append() or append_many() has returned, one write per
# transaction, so a printed seq is one the log promised to keep.
APPENDER = textwrap.dedent("""
    import os, sys
    from installengine.eventlog import EventLog
    out = sys.stdout
    out.write("start\\n"); out.flush()
    log = EventLog.open(sys.argv[1], durable=True)
    session = "crash-%d" % os.getpid()
    out.write("open %d\\n" % log.head[0]); out.flush()
    i = 0
    while True:
        i += 1
        if i % 4 == 0:
            events = log.append_many([
                {"kind": "cache-changed", "session": session, "checkpoint": "format",
                 "data": {"i": i, "part": part, "pad": "p" * (i % 700)}} for part in range(5)])
            out.write("".join("%d\\n" % e.seq for e in events))
        else:
            event = log.append("checkpoint-started", session=session, checkpoint="partition",
                               data={"i": i, "pad": "q" * (i * 37 % 1500)})
            out.write("%d\\n" % event.seq)
        out.flush()
""")


def _kill_at_random(proc: subprocess.Popen[bytes], rnd: random.Random, *, fresh: bool) -> bytes:
    """SIGKILL the appender at a random moment; return everything it printed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    output = b""
    in_open = rnd.random() < (0.6 if fresh else 0.15)
    # Wait for "start" (imports done) and a few ms more, to land in open(): creating the
    # file, the schema, the first append; or wait for a random number of appends.
    wanted = 1 if in_open else rnd.randint(2, 60)
    deadline = time.monotonic() + 20
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while output.count(b"\n") < wanted and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if selector.select(timeout=1):
                output += os.read(fd, 65536) or b""
    time.sleep(rnd.uniform(0, 0.015) if in_open else rnd.uniform(0, 0.004))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)
    while chunk := os.read(fd, 65536):
        output += chunk
    proc.stdout.close()
    return output


def _printed_seqs(output: bytes) -> list[int]:
    lines = output.decode().split("\n")[:-1]  # a line without its newline was not finished
    return [int(line) for line in lines if line != "start" and not line.startswith("open ")]


@pytest.mark.slow
def test_a_killed_appender_loses_nothing_it_was_promised(tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    script = tmp_path / "appender.py"
    script.write_text(APPENDER)
    path = tmp_path / "log.db"
    history: dict[int, str] = {}  # seq -> hash of everything seen so far
    deadline = time.monotonic() + 60
    for trial in range(TRIALS):
        fresh = trial % 4 == 0
        if fresh:
            # Start over now and then, so that some kills land while a log is created.
            path = tmp_path / f"fresh-{trial}" / "log.db"
            history = {}
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        printed = _printed_seqs(_kill_at_random(proc, rnd, fresh=fresh))
        assert proc.returncode == -signal.SIGKILL, f"trial {trial}: the appender died on its own"

        with EventLog.open(path, durable=True) as log:  # what the next session does
            report = log.verify()
            stored = list(log.query())
        seqs = [e.seq for e in stored]
        assert report == VerifyReport(True, None, None, len(stored)), f"trial {trial}: {report}"
        assert seqs == list(range(1, len(seqs) + 1)), f"trial {trial}: seq has gaps"
        assert set(printed) <= set(seqs), f"trial {trial}: lost {sorted(set(printed) - set(seqs))}"
        # At most the one transaction that was in flight may be in the log unannounced.
        assert len(seqs) - max([*printed, len(history)]) <= 5, f"trial {trial}"
        # Earlier events are never rewritten by a later crash or recovery.
        assert all(history[e.seq] == e.hash for e in stored if e.seq in history), f"trial {trial}"
        assert len(stored) >= len(history), f"trial {trial}: events vanished"
        history = {e.seq: e.hash for e in stored}
        with EventLog.open(path, readonly=True) as audit:
            assert audit.verify().ok
        assert time.monotonic() < deadline, "the crash trials are taking far too long"
