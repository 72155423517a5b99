"""What an installer writes: checkpoints, and the context they run with."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from installengine.snapshots import CacheDict, Target, target_from_spec


class CheckpointCanceled(Exception):
    """Raised by a checkpoint that stops early because cancel was requested."""


class Context:
    """What a running checkpoint may use: the cache, progress, cancel and the target."""

    def __init__(self, *, name: str, cache: CacheDict, volatile: dict[str, Any], dry_run: bool,
                 cancel_requested: threading.Event, logger: logging.Logger,
                 report: Callable[[float, str], None], target: Target | None,
                 attach: Callable[[Target | str], None]) -> None:
        self.name = name
        self.cache = cache
        self.volatile = volatile
        self.dry_run = dry_run
        self.cancel_requested = cancel_requested
        self.logger = logger
        self.target = target
        self._report = report
        self._attach = attach

    def progress(self, percent: float, message: str = "") -> None:
        """Report this checkpoint's own progress, 0–100; the engine scales it into its share."""
        self._report(percent, message)

    def raise_if_canceled(self) -> None:
        """Stop here if cancel was requested.

        :raises CheckpointCanceled: when it was.
        """
        if self.cancel_requested.is_set():
            raise CheckpointCanceled(f"checkpoint {self.name!r} canceled")

    def attach_target(self, target: Target | str) -> None:
        """Attach the install target (e.g. right after creating the dataset)."""
        self._attach(target)
        # a spec string gives an equal target: the engine attached the same spec
        self.target = target_from_spec(target)


class Checkpoint:
    """Base class of class-based checkpoints: subclass it and implement :meth:`execute`.

    Registration arguments follow the name: ``Partition(name, disk)``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancel_requested = threading.Event()

    def progress_estimate(self) -> float:
        """Seconds this checkpoint takes on a reference machine (a weight for progress)."""
        return 1.0

    def execute(self, ctx: Context) -> None:
        """Do the work. Raise to fail; raise CheckpointCanceled to honour a cancel."""
        raise NotImplementedError(f"checkpoint {self.name!r} does not implement execute()")

    def cancel(self) -> None:
        """Ask the checkpoint to stop; by default sets ``cancel_requested``."""
        self.cancel_requested.set()


class FunctionCheckpoint(Checkpoint):
    """A plain function ``f(ctx, *args, **kwargs)`` used as a checkpoint."""

    def __init__(self, name: str, function: Callable[..., Any], args: list[Any],
                 kwargs: dict[str, Any]) -> None:
        super().__init__(name)
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def execute(self, ctx: Context) -> None:
        self.function(ctx, *self.args, **self.kwargs)
