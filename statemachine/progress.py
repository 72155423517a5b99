"""Overall progress: 5 % for loading, the rest split by the checkpoints' weights.

A checkpoint's own 0–100 reports are scaled into its share, and overall
progress never goes down within one execution, whatever checkpoints report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .results import ProgressEvent

logger = logging.getLogger(__name__)

LOADING_SHARE = 5.0


class ProgressTracker:
    """Turns checkpoint reports into never-decreasing overall progress for the listeners."""

    def __init__(self, names: Sequence[str], weights: Sequence[float],
                 listeners: Sequence[Callable[[ProgressEvent], None]]) -> None:
        clean = [w if w > 0 else 1.0 for w in weights]
        total = sum(clean) or 1.0
        self._names = list(names)
        self._share = {n: (100.0 - LOADING_SHARE) * w / total for n, w in zip(names, clean,
                                                                            strict=True)}
        self._start: dict[str, float] = {}
        acc = LOADING_SHARE
        for n in names:
            self._start[n] = acc
            acc += self._share[n]
        self._listeners = listeners
        self.percent = 0.0

    def _emit(self, percent: float, checkpoint: str | None, message: str) -> None:
        self.percent = max(self.percent, min(100.0, percent))
        event = ProgressEvent(round(self.percent, 3), checkpoint, message)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("progress listener %r raised; ignoring it", listener)

    def loaded(self) -> None:
        self._emit(LOADING_SHARE, None, "checkpoints loaded")

    def checkpoint_started(self, name: str) -> None:
        self._emit(self._start[name], name, "started")

    def report(self, name: str, percent: float, message: str) -> None:
        try:
            fraction = max(0.0, min(100.0, float(percent))) / 100.0
        except (TypeError, ValueError):
            fraction = 0.0
        self._emit(self._start[name] + self._share[name] * fraction, name, message)

    def checkpoint_completed(self, name: str) -> None:
        self._emit(self._start[name] + self._share[name], name, "completed")

    def finished(self) -> None:
        self._emit(100.0, None, "finished")
