"""One attempt: run the planned checkpoints with a snapshot point before and after each.

The runner owns nothing: it is handed the registrations, the recorder and the
signals, so the facade stays small and this loop can be read on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from installengine.eventlog import EngineError, EventKind
from installengine.snapshots import DataCache, Recorder, Target, When
from installengine.snapshots.recorder import PointRequest

from .checkpoint import Checkpoint, CheckpointCanceled, Context
from .progress import ProgressTracker
from .registry import Registration
from .results import ErrorInfo, ProgressEvent, Result, Status

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Signals:
    """What other threads use to steer a running execution."""

    pause: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    running: Checkpoint | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: ident of the thread running the execution, so cancel() from it does not wait on itself
    thread: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What one execution will run, decided before it starts."""

    run: list[Registration]
    attempt: int
    pause_before: str | None
    dry_run: bool
    stop_on_error: bool


def run_attempt(plan: Plan, *, recorder: Recorder, cache: DataCache, signals: Signals,
                listeners: Sequence[Callable[[ProgressEvent], None]],
                target: Callable[[], Target | None],
                attach: Callable[[Target | str], None]) -> Result:
    """Run ``plan`` to its end, a failure, a pause or a cancel, and say how it ended."""
    failed: list[str] = []
    errors: dict[str, ErrorInfo] = {}
    instances: list[Checkpoint] = []
    for reg in plan.run:
        try:
            instances.append(reg.construct())
        except Exception as err:
            errors[reg.name] = ErrorInfo.from_exception(err)
            failed.append(reg.name)
            _record(recorder, EventKind.CHECKPOINT_FAILED, reg.name,
                    {"phase": "init", **errors[reg.name].as_json(), "attempt": plan.attempt})
            return Result(Status.INIT_FAILED, failed, errors)
    progress = ProgressTracker([r.name for r in plan.run],
                               [_estimate(c) for c in instances], listeners)
    progress.loaded()
    work_cache = DataCache(cache.to_plain()) if plan.dry_run else cache
    work_cache.volatile = cache.volatile

    # A completed checkpoint whose point is not recorded yet: it is recorded together
    # with the next checkpoint's before-point, in one transaction (one fsync).
    pending: Registration | None = None

    def completed_request(done: Registration) -> PointRequest:
        data = {"fingerprint": done.fingerprint, "attempt": plan.attempt, "point": None,
                "dry_run": plan.dry_run}
        return PointRequest(done.name, When.COMPLETED, done.fingerprint, plan.attempt,
                            (EventKind.CHECKPOINT_COMPLETED, "point", data))

    def flush() -> Result | None:
        """Record the pending completion on its own; a Result if that failed."""
        nonlocal pending
        if pending is None:
            return None
        done, pending = pending, None
        if plan.dry_run:
            request = completed_request(done)
            assert request.then is not None
            _record(recorder, EventKind.CHECKPOINT_COMPLETED, done.name, request.then[2])
        else:
            try:
                recorder.take_points([completed_request(done)])
            except EngineError as err:
                return _storage_failure(recorder, done, err, failed, errors, plan)
        progress.checkpoint_completed(done.name)
        return None

    for reg, checkpoint in zip(plan.run, instances, strict=True):
        if signals.cancel.is_set() or signals.pause.is_set():
            stopped = flush()
            if stopped is not None:
                return stopped
            if signals.cancel.is_set():
                return Result(Status.CANCELED, failed, errors)
            return Result(Status.FAILED if failed else Status.PAUSED, failed, errors)
        before_seq: int | None = None
        started = {"fingerprint": reg.fingerprint, "attempt": plan.attempt, "before": None,
                   "dry_run": plan.dry_run}
        if plan.dry_run:
            flush()
            _record(recorder, EventKind.CHECKPOINT_STARTED, reg.name, started)
        else:
            requests = [completed_request(pending)] if pending is not None else []
            requests.append(PointRequest(reg.name, When.BEFORE, reg.fingerprint, plan.attempt,
                                         (EventKind.CHECKPOINT_STARTED, "before", started)))
            try:
                before_seq = recorder.take_points(requests)[-1].seq
            except EngineError as err:
                return _storage_failure(recorder, pending or reg, err, failed, errors, plan)
            if pending is not None:
                progress.checkpoint_completed(pending.name)
                pending = None
        progress.checkpoint_started(reg.name)
        ctx = Context(name=reg.name, cache=work_cache.persistent, volatile=work_cache.volatile,
                      dry_run=plan.dry_run, cancel_requested=checkpoint.cancel_requested,
                      logger=_logger_for(reg), report=_reporter(progress, reg.name),
                      target=target(), attach=attach)
        with signals.lock:
            signals.running = checkpoint
        if signals.cancel.is_set():
            checkpoint.cancel()
        work_cache.actor = reg.name
        try:
            checkpoint.execute(ctx)
        except CheckpointCanceled:
            _record(recorder, EventKind.CHECKPOINT_CANCELED, reg.name,
                    {"attempt": plan.attempt, "before": before_seq})
            return Result(Status.CANCELED, failed, errors, canceled=reg.name)
        except Exception as err:
            info = ErrorInfo.from_exception(err)
            errors[reg.name] = info
            failed.append(reg.name)
            _record(recorder, EventKind.CHECKPOINT_FAILED, reg.name,
                    {**info.as_json(), "attempt": plan.attempt, "before": before_seq})
            if plan.stop_on_error:
                return Result(Status.FAILED, failed, errors)
            continue
        except BaseException as err:  # KeyboardInterrupt inside a checkpoint: a cancel
            _record(recorder, EventKind.CHECKPOINT_CANCELED, reg.name,
                    {"attempt": plan.attempt, "before": before_seq, "by": type(err).__name__})
            raise
        finally:
            work_cache.actor = None
            with signals.lock:
                signals.running = None
        pending = reg

    stopped = flush()
    if stopped is not None:
        return stopped
    if failed:
        return Result(Status.FAILED, failed, errors)
    if signals.cancel.is_set():
        return Result(Status.CANCELED, failed, errors)
    if plan.pause_before is not None:
        return Result(Status.PAUSED, failed, errors)
    progress.finished()
    return Result(Status.SUCCESS, failed, errors)


def _storage_failure(recorder: Recorder, reg: Registration, err: EngineError,
                     failed: list[str], errors: dict[str, ErrorInfo], plan: Plan) -> Result:
    """A snapshot point could not be recorded: the checkpoint fails and the run stops."""
    info = ErrorInfo.from_exception(err)
    errors[reg.name] = ErrorInfo(info.type, f"snapshot point not recorded: {err}", info.traceback)
    failed.append(reg.name)
    _record(recorder, EventKind.CHECKPOINT_FAILED, reg.name,
            {**errors[reg.name].as_json(), "attempt": plan.attempt, "phase": "snapshot"})
    return Result(Status.FAILED, failed, errors)


def _record(recorder: Recorder, kind: EventKind, checkpoint: str, data: dict[str, Any]) -> None:
    try:
        recorder.append(kind, checkpoint=checkpoint, data=data)
    except EngineError as err:
        # The log cannot take it (disk full): the run's outcome still reaches the caller.
        logger.error("could not record %s for %s: %s", kind, checkpoint, err)


def _estimate(checkpoint: Checkpoint) -> float:
    try:
        return float(checkpoint.progress_estimate())
    except Exception:
        logger.exception("progress_estimate() of %s raised; using 1", checkpoint.name)
        return 1.0


def _logger_for(reg: Registration) -> logging.Logger:
    log = logging.getLogger(f"installengine.checkpoint.{reg.name}")
    if reg.loglevel is not None:
        log.setLevel(reg.loglevel)
    return log


def _reporter(progress: ProgressTracker, name: str) -> Callable[[float, str], None]:
    def report(percent: float, message: str = "") -> None:
        progress.report(name, percent, message)
    return report
