"""Checkpoints of the CLI tests' plans.

conftest copies this file next to each test's plan as ``cli_steps.py``, so
that the plan's own directory makes it importable, in the test process and in
the ``installengine`` child processes alike. Checkpoints talk to the test
through files: ``wait_for_release`` creates its ``started`` file, then waits
until the test creates ``release`` (or cancels it). Every wait has a timeout.
"""

from __future__ import annotations

from pathlib import Path

from installengine.statemachine import Checkpoint, CheckpointCanceled, Context

WAIT_TIMEOUT = 20.0


def record(ctx: Context, key: str, value: object = True) -> None:
    """Set cache[key] and write a file named after the checkpoint into the target."""
    ctx.cache[key] = value
    if ctx.target is not None and not ctx.dry_run:
        (ctx.target.root / f"{ctx.name}.txt").write_text(f"{key}={value!r}\n")
    ctx.progress(50, f"recorded {key}")


def big(ctx: Context, kib: int) -> None:
    """Put ``kib`` KiB into the cache: enough makes the engine write a snapshot file."""
    ctx.cache["blob"] = "x" * (kib * 1024)


def boom(ctx: Context, message: str) -> None:
    raise ValueError(message)


def give_up(ctx: Context) -> None:
    raise CheckpointCanceled(f"checkpoint {ctx.name!r} gave up")


def wait_for_release(ctx: Context, started: str, release: str) -> None:
    """Create ``started``, then wait for ``release`` to exist or for a cancel."""
    Path(started).write_text("started\n")
    for _ in range(int(WAIT_TIMEOUT / 0.02)):
        if Path(release).exists():
            ctx.cache["released"] = True
            return
        if ctx.cancel_requested.wait(0.02):
            ctx.raise_if_canceled()
    raise TimeoutError(f"{release} was never created")


class Weighted(Checkpoint):
    """A class-based checkpoint with a progress weight."""

    def __init__(self, name: str, weight: float = 1.0) -> None:
        super().__init__(name)
        self.weight = weight

    def progress_estimate(self) -> float:
        return self.weight

    def execute(self, ctx: Context) -> None:
        ctx.progress(100, f"weighted {self.weight}")
        ctx.cache[self.name] = self.weight
