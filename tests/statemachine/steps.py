"""Checkpoints the engine tests register by ``tests.statemachine.steps:<name>``.

Tests talk to a running checkpoint through the engine's volatile cache, which
the engine hands to every checkpoint as ``ctx.volatile`` and never records:
``threading.Event`` gates go there, and checkpoints note there what they saw.
Every wait has a timeout, so a broken engine fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from installengine.statemachine import Checkpoint, CheckpointCanceled, Context

MODULE = __name__


def ref(qualname: str) -> str:
    """The ``module:qualname`` reference of a checkpoint defined here."""
    return f"{MODULE}:{qualname}"


#: how long a checkpoint waits for a gate before it gives up and fails
GATE_TIMEOUT = 10.0


class DiskError(Exception):
    """A failure with a qualified name outside builtins."""


def _ran(ctx: Context) -> None:
    ctx.volatile.setdefault("ran", []).append(ctx.name)


def _gate(ctx: Context, key: str) -> threading.Event:
    gate = ctx.volatile.get(key)
    if not isinstance(gate, threading.Event):
        raise RuntimeError(f"the test did not put a threading.Event at volatile[{key!r}]")
    return gate


def _wait(gate: threading.Event, what: str) -> None:
    if not gate.wait(GATE_TIMEOUT):
        raise TimeoutError(f"gave up waiting for {what}")


# -- plain function checkpoints -------------------------------------------------------------


def record(ctx: Context, value: Any = True) -> None:
    """Set ``cache[<name>] = value`` and note that it ran."""
    ctx.cache[ctx.name] = value
    _ran(ctx)


def noop(ctx: Context) -> None:
    _ran(ctx)


def two_args(ctx: Context, disk: str, size: int = 1) -> None:
    ctx.cache[ctx.name] = {"disk": disk, "size": size}
    _ran(ctx)


def fail(ctx: Context, message: str = "boom") -> None:
    """Change the cache, then raise ValueError: the change must not count as completed."""
    ctx.cache[f"{ctx.name}-partial"] = True
    _ran(ctx)
    raise ValueError(message)


def disk_fail(ctx: Context) -> None:
    _ran(ctx)
    raise DiskError(f"{ctx.name}: disk on fire")


def note_dry_run(ctx: Context) -> None:
    ctx.volatile.setdefault("dry_run", []).append(ctx.dry_run)
    if not ctx.dry_run:
        ctx.cache[ctx.name] = "real"
    _ran(ctx)


def append_item(ctx: Context, item: str) -> None:
    """Append to ``cache['items']``: running twice from one state would show twice."""
    items = ctx.cache.setdefault("items", [])
    items.append(item)
    _ran(ctx)


def append_then_fail(ctx: Context, item: str) -> None:
    """Append to ``cache['items']``, then raise: a retry on top of it would show it twice."""
    ctx.cache.setdefault("items", []).append(item)
    _ran(ctx)
    raise ValueError(f"{ctx.name} failed after appending")


def gated(ctx: Context) -> None:
    """Set ``volatile['started']``, then wait for ``volatile['release']``; then record."""
    _gate(ctx, "started").set()
    _wait(_gate(ctx, "release"), "volatile['release']")
    ctx.cache[ctx.name] = True
    _ran(ctx)


def wait_for_cancel(ctx: Context, honour: bool = True) -> None:
    """Signal ``started`` and wait for the cancel request; then stop or finish normally."""
    _gate(ctx, "started").set()
    _wait(ctx.cancel_requested, "the cancel request")
    if honour:
        ctx.raise_if_canceled()
    ctx.cache[ctx.name] = "finished after cancel"
    _ran(ctx)


def cancel_once(ctx: Context) -> None:
    """The first run: partial change, wait for the cancel request, honour it. Later runs: record."""
    if ctx.volatile.get("canceled_once"):
        ctx.cache[ctx.name] = "done"
        _ran(ctx)
        return
    ctx.cache[f"{ctx.name}-partial"] = True
    _gate(ctx, "started").set()
    _wait(ctx.cancel_requested, "the cancel request")
    ctx.volatile["canceled_once"] = True
    ctx.raise_if_canceled()


def raise_canceled(ctx: Context) -> None:
    """Raise CheckpointCanceled directly, with no cancel request at all."""
    _ran(ctx)
    raise CheckpointCanceled("gave up by itself")


def report_progress(ctx: Context, reports: list[float]) -> None:
    for pct in reports:
        ctx.progress(pct, f"at {pct}")
    _ran(ctx)


def attach(ctx: Context, spec: str) -> None:
    """Attach the target from inside a checkpoint, as one that creates the dataset would."""
    ctx.attach_target(spec)
    ctx.cache[ctx.name] = spec
    ctx.volatile["attached_target"] = ctx.target
    _ran(ctx)


def write_file(ctx: Context, relpath: str, content: str) -> None:
    """Write a file into the target's root and note it in the cache."""
    assert ctx.target is not None, "write_file needs a target"
    path = ctx.target.root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    ctx.cache[ctx.name] = relpath


def crash_point(ctx: Context, marker: str) -> None:
    """Write a file into the target and the cache; in a crash run, die half-way.

    When the process that runs it set ``volatile['crash']``, the checkpoint makes
    partial changes, writes ``marker`` and blocks until it is SIGKILLed. The
    loop is not synchronisation: the test waits on the marker, then kills the
    process; sleeping only keeps the checkpoint running. Without the flag (the
    resume) it does its whole work, so both runs share one fingerprint.
    """
    root = ctx.target.root if ctx.target is not None else None
    if ctx.volatile.get("crash"):
        ctx.cache[f"{ctx.name}-partial"] = True
        if root is not None:
            (root / f"{ctx.name}.partial").write_text("half done")
        Path(marker).write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise TimeoutError("crash_point was never killed")
    if root is not None:
        (root / f"{ctx.name}.txt").write_text("done")
    ctx.cache[ctx.name] = "done"
    _ran(ctx)


# -- class checkpoints -----------------------------------------------------------------------


class Record(Checkpoint):
    """A class checkpoint with a registration argument after the name."""

    def __init__(self, name: str, value: Any = True) -> None:
        super().__init__(name)
        self.value = value

    def execute(self, ctx: Context) -> None:
        ctx.cache[self.name] = self.value
        _ran(ctx)


class Weighted(Checkpoint):
    """Reports ``reports`` (its own 0–100) with ``progress_estimate() == weight``."""

    def __init__(self, name: str, weight: float = 1.0, reports: list[float] | None = None) -> None:
        super().__init__(name)
        self.weight = weight
        self.reports = reports or []

    def progress_estimate(self) -> float:
        return self.weight

    def execute(self, ctx: Context) -> None:
        for pct in self.reports:
            ctx.progress(pct, f"{self.name} {pct}")
        _ran(ctx)


class BadInit(Checkpoint):
    """Its constructor raises: the execution is INIT_FAILED before anything runs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        raise RuntimeError(f"cannot build {name}")


class CountingCancel(Checkpoint):
    """Counts calls to cancel() in ``volatile['cancel_calls']`` and honours the request."""

    def execute(self, ctx: Context) -> None:
        self._volatile = ctx.volatile
        _gate(ctx, "started").set()
        _wait(self.cancel_requested, "the cancel request")
        ctx.raise_if_canceled()

    def cancel(self) -> None:
        calls = self._volatile.setdefault("cancel_calls", [])
        calls.append(threading.get_ident())
        super().cancel()


class NotACheckpoint:
    """A class that does not derive from Checkpoint: registration refuses it."""

    def __init__(self, name: str) -> None:
        self.name = name

