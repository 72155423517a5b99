"""docs/events.md lists every event kind and exactly the data fields the engine writes.

One install appends every kind, optional fields included: a run with a mid-run attach,
a pause, a failure, a resume, a stale lock taken over, a refused cleanup, a cancel, an
interrupted checkpoint, an init failure, a cleanup and a prune. The fields each kind
carried are compared with the field table of its section in the docs, both ways: an
undocumented field fails, and so does a documented one that no event carries.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from installengine.eventlog import EventLog
from installengine.eventlog.events import EventKind
from installengine.statemachine import (
    Checkpoint,
    CheckpointCanceled,
    Context,
    EngineStateError,
    InstallEngine,
)
from installengine.statemachine.cli import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
BOUNDED = 30  # seconds any wait in this test may take

_started = threading.Event()
_release = threading.Event()


def count(ctx: Context) -> None:
    ctx.cache["n"] = ctx.cache.get("n", 0) + 1


def big(ctx: Context) -> None:
    # large enough that the recorder writes a snapshot file for the point after it
    ctx.cache["blob"] = "x" * 300_000 + str(ctx.cache.get("n"))


def boom(ctx: Context) -> None:
    raise ValueError("boom")


def attach(ctx: Context, spec: str) -> None:
    ctx.attach_target(spec)


def gated(ctx: Context) -> None:
    _started.set()
    if not _release.wait(BOUNDED):
        raise TimeoutError("the test never released the gated checkpoint")


def honour_cancel(ctx: Context) -> None:
    raise CheckpointCanceled()


def interrupted(ctx: Context) -> None:
    raise KeyboardInterrupt


class BrokenInit(Checkpoint):
    def __init__(self, name: str) -> None:
        raise OSError("no such disk")


def documented_fields() -> dict[str, set[str]]:
    """``{kind: {field, ...}}`` from the ``## kind`` sections and their field tables."""
    sections = re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]
    fields: dict[str, set[str]] = {}
    for section in sections:
        kind, _, body = section.partition("\n")
        fields[kind.strip()] = set(re.findall(r"^\| `([a-z0-9_]+)` \|", body, re.M))
    return fields


def run_every_kind(tmp_path: Path) -> Path:
    """Drive one install through every event kind; returns the durable log's path."""
    _started.clear()
    _release.clear()
    spec = f"dir:{tmp_path / 'target'}"
    with InstallEngine() as engine:  # no target yet: the checkpoint "att" attaches it
        engine.register("a", count)
        engine.register("att", attach, args=[spec])
        engine.register("b", big)
        engine.register("c", boom)
        engine.cache["blob"] = "y" * 300_000  # a big first state: recorded in the log alone
        assert engine.execute(pause_before="b").status.name == "PAUSED"
        assert engine.execute().status.name == "FAILED"
        assert engine.execute(start_from="b").status.name == "FAILED"
    # a process that dies holding the target: the next engine takes its lock over
    subprocess.run([sys.executable, "-c",
                    "import os; from installengine.statemachine import InstallEngine; "
                    f"InstallEngine({spec!r}); os._exit(0)"], check=True, timeout=BOUNDED)
    with InstallEngine(target=spec) as engine:
        for name, call in [("a", count), ("att", attach), ("b", big), ("g", gated),
                           ("c", honour_cancel)]:
            engine.register(name, call, args=[spec] if name == "att" else [])
        handle = engine.start(start_from="b")
        assert _started.wait(BOUNDED)
        with pytest.raises(EngineStateError, match="cannot clean up while the engine is running"):
            engine.cleanup()
        _release.set()
        result = handle.wait(BOUNDED)
        assert result is not None
        assert result.status.name == "CANCELED"
        engine.cleanup()
    with InstallEngine(target=spec) as engine:
        engine.register("i", interrupted)
        with pytest.raises(KeyboardInterrupt):
            engine.execute()
    with InstallEngine(target=spec) as engine:
        engine.register("broken", BrokenInit)
        assert engine.execute().status.name == "INIT_FAILED"
    assert CliRunner().invoke(cli, ["prune", "--target", spec, "--keep-last", "1",
                               "--confirm"]).exit_code == 0
    return tmp_path / "target" / ".installengine" / "log.db"


def test_every_kind_and_field_the_engine_writes_is_documented(tmp_path: Path) -> None:
    log_path = run_every_kind(tmp_path)
    seen: dict[str, set[str]] = defaultdict(set)
    with EventLog.open(log_path, readonly=True) as log:
        for ev in log.query():
            assert isinstance(ev.data, dict), ev
            seen[ev.kind] |= set(ev.data)
    documented = documented_fields()
    assert set(documented) == {k.value for k in EventKind}, "a kind without a section"
    assert set(seen) == set(documented), "the install did not append every kind"
    for kind in sorted(seen):
        assert seen[kind] - documented[kind] == set(), f"{kind}: undocumented fields"
        assert documented[kind] - seen[kind] == set(), f"{kind}: documented, never written"
