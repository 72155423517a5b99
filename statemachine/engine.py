"""InstallEngine: the public facade, composing registry, runner, recorder, log and target."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from installengine.eventlog import EventKind, EventLog, SessionInfo, UsageError, VerifyReport
from installengine.snapshots import (
    CacheDict,
    DataCache,
    Decision,
    Recorder,
    Registered,
    SnapshotStore,
    SnapshotUnavailableError,
    Target,
    TargetError,
    TargetLock,
    Verdict,
    create_area,
    remove_area,
    target_from_spec,
)
from installengine.snapshots.points import fs_snapshot_owner
from installengine.snapshots.recorder import SEQ_FIELDS, read_lineage

from .errors import EngineStateError, NotResumableError, RegistrationError
from .handle import ExecutionHandle
from .lifecycle import Lifecycle, allowed_triggers, build_machine
from .registry import Registration, build_registration
from .results import ProgressEvent, Result, Status
from .runner import Plan, Signals, run_attempt

logger = logging.getLogger(__name__)

LOG_NAME = "log.db"
SNAPSHOT_DIR = "snapshots"

_TRIGGER_KINDS = {"start": EventKind.EXECUTION_STARTED, "pause": EventKind.PAUSED,
                  "cancel": EventKind.CANCELED}
_STATUS_TRIGGER = {Status.SUCCESS: "complete", Status.PAUSED: "pause", Status.FAILED: "fail",
                   Status.INIT_FAILED: "fail", Status.CANCELED: "cancel"}


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("installengine")
    except PackageNotFoundError:
        return "0+unknown"


def _machine_error() -> type[Exception]:
    from transitions import MachineError

    return MachineError


class InstallEngine:
    """Registers checkpoints, runs them, and resumes them, recording everything in the log.

    :raises TargetError: when the target cannot be prepared.
    :raises TargetLockedError: when another live engine holds the target.
    :raises LogIntegrityError: when the target's log is not an installengine log.
    :raises SchemaVersionError: when the target's log is of a newer schema.
    """

    def __init__(self, target: Target | str | None = None, *, stop_on_error: bool = True,
                 keep_volatile: bool = False) -> None:
        self.stop_on_error = stop_on_error
        self.keep_volatile = keep_volatile
        self.session = SessionInfo.current(engine_version())
        self.progress_listeners: list[Callable[[ProgressEvent], None]] = []
        self._registrations: list[Registration] = []
        self._signals = Signals()
        self._exec_guard = threading.Lock()
        #: the handle of the latest start(), so cancel() can wait until it is told
        self._handle: ExecutionHandle | None = None
        self._area: Path | None = None
        self._lock: TargetLock | None = None
        self._target: Target | None = None
        self._closed = False
        self._lifecycle = Lifecycle()
        self._machine = build_machine(self._lifecycle, self._on_transition)
        cache = DataCache()
        if target is not None:
            t = target_from_spec(target)
            log, store = self._open_durable(t)
            self._target = t
            durable = True
        else:
            self._area = create_area(self.session)
            try:
                log = EventLog.open(self._area / LOG_NAME, durable=False)
            except BaseException:
                remove_area(self._area)
                raise
            store = SnapshotStore(self._area / SNAPSHOT_DIR, durable=False)
            durable = False
        try:
            self._start_session(log, store, cache, durable)
        except BaseException:
            # No engine comes out of a failed open: give back what it took, or the
            # target would stay locked by this process until it exits.
            log.close()
            if self._lock is not None:
                self._lock.close()
            if self._area is not None and not keep_volatile:
                remove_area(self._area)
            raise

    def _start_session(self, log: EventLog, store: SnapshotStore, cache: DataCache,
                       durable: bool) -> None:
        report = log.verify()
        if not report.ok:
            logger.warning("log %s fails verification at event %s: %s", log.path,
                           report.first_bad_seq, report.reason)
        self._recorder = Recorder(log, store, cache, session=self.session.id, durable=durable,
                                  target=self._target, first_bad_seq=_first_untrusted(report))
        self._recorder.append(EventKind.SESSION_STARTED, data={
            **self.session.as_json(), "target": self._target.describe() if self._target else None,
            "log": str(log.path)})
        self._note_lock_takeover()
        if self._target is not None:
            self._recorder.append(EventKind.TARGET_ATTACHED,
                                  data={**self._target.describe(), "copied_events": 0})
        self._attempt = sum(1 for _ in log.query(kind=EventKind.EXECUTION_STARTED))

    def _open_durable(self, target: Target) -> tuple[EventLog, SnapshotStore]:
        target.prepare()
        lock = TargetLock(target.state_dir, self.session.as_json()).acquire()
        try:
            _refuse_symlink(target.state_dir / LOG_NAME)
            log = EventLog.open(target.state_dir / LOG_NAME, durable=True)
        except BaseException:
            lock.close()
            raise
        self._lock = lock
        store = SnapshotStore(target.state_dir / SNAPSHOT_DIR, durable=True)
        if lock.taken_over_from is not None:
            # The previous holder died: whatever it was half-way through writing is
            # no snapshot (it was never renamed into place), only clutter.
            for stray in store.remove_strays() + target.remove_strays():
                logger.info("removed %s, left by an engine that did not end cleanly", stray)
        return log, store

    def _note_lock_takeover(self) -> None:
        if self._lock is not None and self._lock.taken_over_from is not None:
            self._recorder.append(EventKind.LOCK_TAKEN_OVER,
                                  data={"previous_holder": self._lock.taken_over_from})

    # -- properties ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The lifecycle state: idle, running, paused, completed, failed or canceled."""
        return str(self._lifecycle.state)

    @property
    def cache(self) -> CacheDict:
        """The persistent data cache: logged, snapshotted and rolled back."""
        return self._recorder.cache.persistent

    @property
    def volatile(self) -> dict[str, Any]:
        """The volatile data cache: memory only, never logged or rolled back."""
        return self._recorder.cache.volatile

    @property
    def log(self) -> EventLog:
        """The event log this engine writes (read it, never write it directly)."""
        return self._recorder.log

    @property
    def target(self) -> Target | None:
        return self._target

    @property
    def checkpoints(self) -> list[str]:
        """The registered checkpoint names, in order."""
        return [r.name for r in self._registrations]

    # -- registering -----------------------------------------------------------------------

    def register(self, name: str, call: str | Callable[..., Any], *,
                 args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
                 insert_before: str | None = None, loglevel: str | int | None = None,
                 version: str | None = None, description: str = "") -> None:
        """Register a checkpoint: a ``module:qualname`` reference, a Checkpoint class or a function.

        :raises RegistrationError: naming what is wrong; nothing is registered.
        :raises EngineStateError: while an execution runs.
        """
        self._require_not_running("register a checkpoint", trigger="register")
        reg = build_registration(name, call, args=args, kwargs=kwargs, version=version,
                                 loglevel=loglevel, description=description)
        names = self.checkpoints
        if reg.name in names:
            raise RegistrationError(f"checkpoint {reg.name!r} is already registered; names are "
                                    "unique")
        position = len(names)
        if insert_before is not None:
            if insert_before not in names:
                raise RegistrationError(f"cannot insert {reg.name!r} before {insert_before!r}: "
                                        f"no such checkpoint; registered: {', '.join(names)}")
            if insert_before in {p.checkpoint for p in self._recorder.view_completed()}:
                raise RegistrationError(f"cannot insert {reg.name!r} before {insert_before!r}: "
                                        f"{insert_before!r} has already completed")
            position = names.index(insert_before)
        # Record first: a registration the log cannot take (a full disk) is no registration.
        # Unsynced: a power cut can lose it only before anything ran, and the commit that
        # starts an execution flushes it with its own.
        self._recorder.append(EventKind.CHECKPOINT_REGISTERED, checkpoint=reg.name,
                              data={**reg.as_json(), "position": position}, sync=False)
        self._registrations.insert(position, reg)

    # -- resumability ------------------------------------------------------------------------

    def _registered(self) -> list[Registered]:
        return [Registered(r.name, r.fingerprint) for r in self._registrations]

    def _decisions(self) -> list[Decision]:
        return self._recorder.decide(self._registered())

    def explain(self) -> list[Verdict]:
        """For every registered checkpoint, in order: resumable or not, and why not.

        Each point it would resume from is rebuilt from the log (once per session)
        and checked against its digest, so what it offers, execute() accepts.
        """
        return [d.verdict for d in self._recorder.decide(self._registered(), rebuild=True)]

    def resumable(self) -> list[str]:
        """The checkpoints an execution may start from, in registration order."""
        return [v.name for v in self.explain() if v.resumable]

    def _view_done(self) -> int:
        """How many leading registered checkpoints are completed in this engine's view."""
        done = self._recorder.view_completed()
        count = 0
        for reg, point in zip(self._registrations, done, strict=False):
            if reg.name != point.checkpoint or reg.fingerprint != point.fingerprint:
                break
            count += 1
        return count

    # -- executing ------------------------------------------------------------------------------

    def execute(self, *, start_from: str | None = None, pause_before: str | None = None,
                dry_run: bool = False) -> Result:
        """Run checkpoints in this thread and return how it ended.

        Without ``start_from`` it continues from the first checkpoint not completed
        in this engine's view, with the cache as it is. With ``start_from=X`` it
        rolls the cache and the target back to before X first (unless that is a
        plain continuation), then runs from X.

        :raises UsageError: for unknown names or ``pause_before`` not after the start.
        :raises NotResumableError: when the rules refuse X; nothing is changed.
        :raises EngineStateError: when an execution is already running.
        """
        plan = self._prepare(start_from, pause_before, dry_run)
        self._handle = None
        return self._run(plan, None, None)

    def start(self, *, start_from: str | None = None, pause_before: str | None = None,
              dry_run: bool = False,
              on_finish: Callable[[Result], None] | None = None) -> ExecutionHandle:
        """Like :meth:`execute`, in a new thread; returns a handle at once.

        Errors in the arguments or the rules are raised here, before the thread starts.
        """
        plan = self._prepare(start_from, pause_before, dry_run)
        handle = ExecutionHandle(cancel=self.cancel, pause=self.pause)
        self._handle = handle
        thread = threading.Thread(target=self._run, args=(plan, handle, on_finish),
                                  name="installengine-execution", daemon=True)
        handle.thread = thread
        thread.start()
        return handle

    def _prepare(self, start_from: str | None, pause_before: str | None, dry_run: bool) -> Plan:
        self._check_open()
        if not self._exec_guard.acquire(blocking=False):
            raise self._refused("start", "execute")
        try:
            return self._plan(start_from, pause_before, dry_run)
        except BaseException:
            self._exec_guard.release()
            raise

    def _plan(self, start_from: str | None, pause_before: str | None, dry_run: bool) -> Plan:
        self._require_not_running("execute", trigger="start")
        names = self.checkpoints
        for label, value in (("start_from", start_from), ("pause_before", pause_before)):
            if value is not None and value not in names:
                raise UsageError(f"{label}={value!r} is not a registered checkpoint; "
                                 f"registered: {', '.join(names) or 'none'}")
        decisions = self._decisions()
        done = self._view_done()
        rollback = None
        if start_from is None:
            begin = done
            continues_from: Any = "continuation" if self._recorder.touched else "fresh"
        else:
            begin = names.index(start_from)
            decision = decisions[begin]
            if not decision.verdict.resumable:
                reason = decision.verdict.reason or "not resumable"
                options = [d.verdict.name for d in decisions if d.verdict.resumable]
                hint = (f"resume from {options[-1]!r} or run without --start-from" if options
                        else "run without --start-from")
                # A reason that already says where to resume from needs no second hint.
                text = reason if "resume from" in reason else f"{reason}; {hint}"
                raise NotResumableError(f"cannot resume from {start_from!r}: {text}",
                                        checkpoint=start_from, reason=reason)
            if self._recorder.touched and begin == done and decision.not_started:
                continues_from = "continuation"
            elif decision.point is None:
                continues_from = "fresh"
            else:
                rollback = decision.point
                continues_from = decision.point.seq
        end = len(names)
        if pause_before is not None:
            end = names.index(pause_before)
            if end <= begin:
                first = names[begin] if begin < len(names) else "the end"
                raise UsageError(f"pause_before={pause_before!r} is not after the first "
                                 f"checkpoint to run ({first!r}); pick a later checkpoint")
        self._attempt += 1
        if rollback is not None and not dry_run:
            try:
                self._recorder.rollback_to(rollback, checkpoint=names[begin],
                                           attempt=self._attempt)
            except BaseException as err:
                self._attempt -= 1  # no execution started: its number is not used up
                if isinstance(err, SnapshotUnavailableError):
                    raise NotResumableError(f"cannot resume from {start_from!r}: {err}",
                                            checkpoint=str(start_from), reason=str(err)) from err
                raise
        self._signals.pause.clear()
        self._signals.cancel.clear()
        self._trigger("start", "execute", data={
            "attempt": self._attempt, "start_from": start_from, "pause_before": pause_before,
            "dry_run": dry_run, "continues_from": continues_from,
            "checkpoints": names[begin:end]})
        return Plan(self._registrations[begin:end], self._attempt, pause_before, dry_run,
                    self.stop_on_error)

    def _run(self, plan: Plan, handle: ExecutionHandle | None,
             on_finish: Callable[[Result], None] | None) -> Result:
        result = Result(Status.FAILED)
        self._signals.thread = threading.get_ident()
        try:
            result = run_attempt(plan, recorder=self._recorder, cache=self._recorder.cache,
                                 signals=self._signals, listeners=self.progress_listeners,
                                 target=lambda: self._target, attach=self.attach_target)
        finally:
            self._signals.thread = None
            try:
                self._finish(plan, result)
            finally:
                # The execution is over once its end is recorded: release the guard
                # before the handle and on_finish hear of it, so that a caller woken
                # by handle.wait() (or on_finish itself) can execute again at once.
                self._exec_guard.release()
            if handle is not None:
                handle._finish(result)
            if on_finish is not None:
                try:
                    on_finish(result)
                except Exception:
                    logger.exception("on_finish callback raised")
        return result

    def _finish(self, plan: Plan, result: Result) -> None:
        data = {**result.as_json(), "attempt": plan.attempt}
        try:
            self._trigger(_STATUS_TRIGGER[result.status], "finish", data=data)
        except Exception:
            logger.exception("could not record the end of attempt %s", plan.attempt)
        try:
            self._recorder.append(EventKind.EXECUTION_FINISHED, data=data)
        except Exception as err:
            logger.error("could not record the end of attempt %s: %s", plan.attempt, err)

    # -- steering from other threads ---------------------------------------------------------

    def pause(self) -> None:
        """Stop after the running checkpoint completes (status PAUSED); a no-op when idle."""
        if self.state == "running":
            self._signals.pause.set()

    def cancel(self, *, timeout: float | None = None) -> None:
        """Cancel the running checkpoint and wait for the execution to stop; a no-op when idle."""
        if self.state != "running":
            return
        handle = self._handle
        deadline = None if timeout is None else time.monotonic() + timeout
        self._signals.cancel.set()
        with self._signals.lock:
            running = self._signals.running
        if running is not None:
            try:
                running.cancel()
            except Exception:
                logger.exception("cancel() of checkpoint %s raised", running.name)
        waited = threading.get_ident() != self._signals.thread and self._exec_guard.acquire(
            timeout=-1 if timeout is None else timeout)
        if waited:
            self._exec_guard.release()
            # the guard is released just before the handle is told: wait for that too
            if handle is not None:
                handle.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- targets, cleanup, closing -----------------------------------------------------------

    def attach_target(self, target: Target | str) -> None:
        """Attach the install target: the log moves there and later points are durable.

        Earlier points stay volatile (they were not durable when taken).

        :raises UsageError: when a target is already attached.
        :raises TargetError, TargetLockedError: when the target cannot be used.
        """
        self._check_open()
        t = target_from_spec(target)
        if self._target is not None:
            if t.spec == self._target.spec:
                return
            raise UsageError(f"target {self._target.spec} is already attached; one engine has "
                             "one target")
        dest = t.state_dir / LOG_NAME
        old = self._recorder.log
        t.prepare()
        lock = TargetLock(t.state_dir, self.session.as_json()).acquire()
        try:
            _refuse_symlink(dest)
            copied = 0
            if not dest.exists() or dest.stat().st_size == 0:
                old.copy_to(dest)
                new = EventLog.open(dest, durable=True)
                mapping = None
                copied = len(old)
            else:
                new = EventLog.open(dest, durable=True)
                mapping = _copy_events(old, new)
                copied = len(mapping)
        except BaseException:
            lock.close()
            raise
        self._lock, self._target = lock, t
        rec = self._recorder
        rec.log, rec.store = new, SnapshotStore(t.state_dir / SNAPSHOT_DIR, durable=True)
        rec.durable, rec.target = True, t
        report = new.verify()
        rec.first_bad_seq = _first_untrusted(report)
        if mapping is not None and rec.base is not None:
            rec.base = mapping.get(rec.base)
        rec.lineage = read_lineage(new)
        old.close()
        self._note_lock_takeover()
        rec.append(EventKind.TARGET_ATTACHED, data={**t.describe(), "copied_events": copied,
                                                    "from_log": str(old.path)})

    def cleanup(self) -> None:
        """Remove snapshot files and filesystem snapshots of registered checkpoints; history stays.

        Afterwards nothing counts as completed and only the first checkpoint is resumable.

        :raises EngineStateError: while an execution runs.
        """
        self._check_open()
        self._require_not_running("clean up", trigger="reset")
        names = set(self.checkpoints)
        rec = self._recorder
        files = []
        for f in rec.store.files():
            point = rec.lineage.points.get(f.seq)
            if point is None or point.checkpoint in names:
                rec.store.remove(f.seq, f.digest)
                files.append(f.path.name)
        destroyed = []
        if self._target is not None and self._target.takes_fs_snapshots:
            for snap in self._target.list_snapshots():
                if fs_snapshot_owner(snap.name) in names:
                    self._target.destroy_snapshot(snap.name)
                    destroyed.append(snap.name)
        rec.append(EventKind.CLEANUP, data={"removed_files": files,
                                            "destroyed_fs_snapshots": destroyed})
        rec.rebase()
        if self.state != "idle":
            self._trigger("reset", "clean up", data={"after": "cleanup"})

    def close(self) -> None:
        """End the session: cancel a running execution, release the target, remove the temp area."""
        if self._closed:
            return
        if self.state == "running":
            self.cancel()
        self._closed = True
        try:
            self._recorder.append(EventKind.SESSION_ENDED, data={"state": self.state})
        except Exception as err:
            logger.error("could not record the end of the session: %s", err)
        self._recorder.log.close()
        if self._lock is not None:
            self._lock.close()
        if self._area is not None and not self.keep_volatile:
            remove_area(self._area)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._target.spec if self._target else "no target"
        return f"<InstallEngine {where} state={self.state} checkpoints={self.checkpoints}>"

    # -- the lifecycle machine ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineStateError("the engine is closed; open a new InstallEngine",
                                   state="closed", allowed=[])

    def _require_not_running(self, action: str, *, trigger: str | None = None) -> None:
        if self.state == "running":
            raise self._refused(trigger, action)

    def _refused(self, trigger: str | None, action: str) -> EngineStateError:
        """The error for ``action`` while running; a refused ``trigger`` is recorded too.

        These refusals are decided before the machine is asked (the execution
        guard), so they are recorded here the way the finalize hook records one.
        """
        allowed = ["cancel", "pause"]
        message = (f"cannot {action} while the engine is running; allowed now: "
                   f"{', '.join(allowed)}")
        if trigger is not None:
            try:
                self._recorder.append(EventKind.TRANSITION_REFUSED, data={
                    "trigger": trigger, "state": "running", "error": message})
            except Exception as err:
                logger.error("could not record refused transition %s: %s", trigger, err)
        return EngineStateError(message, state="running", allowed=allowed)

    def _trigger(self, trigger: str, action: str, *, data: dict[str, Any]) -> None:
        try:
            self._lifecycle.trigger(trigger, data=data)
        except _machine_error() as err:
            allowed = allowed_triggers(self.state)
            raise EngineStateError(f"cannot {action} while the engine is {self.state}; allowed "
                                   f"now: {', '.join(allowed) or 'nothing'}", state=self.state,
                                   allowed=allowed) from err

    def _on_transition(self, event: Any) -> None:
        """finalize_event: record every transition, refused ones with their error."""
        data: dict[str, Any] = dict(event.kwargs.get("data") or {})
        trigger = event.event.name
        source = event.transition.source if event.transition else event.state.name
        if event.error is not None:
            kind = EventKind.TRANSITION_REFUSED
            data = {"trigger": trigger, "state": self.state, "error": str(event.error)}
        else:
            kind = _TRIGGER_KINDS.get(trigger, EventKind.TRANSITION)
            data = {**data, "trigger": trigger, "source": source, "dest": self.state}
        try:
            self._recorder.append(kind, data=data)
        except Exception as err:
            logger.error("could not record transition %s: %s", trigger, err)


def _first_untrusted(report: VerifyReport) -> int | None:
    """The first event the resumability rules may not trust; None when the log verified.

    A verify that failed without naming an event (an unreadable page, an altered
    head) leaves nothing to trust, so that is event 1.
    """
    if report.ok:
        return None
    return report.first_bad_seq if report.first_bad_seq is not None else 1


def _refuse_symlink(path: Path) -> None:
    """Refuse a log path that is a symlink: the log would be written wherever it points.

    :raises TargetError: when ``path`` is a symlink.
    """
    if path.is_symlink():
        raise TargetError(f"{path} is a symlink; the log must be a file in the state "
                          "directory itself: remove the link")


def _copy_events(old: EventLog, new: EventLog) -> dict[int, int]:
    """Append this session's events from ``old`` to ``new``, remapping the seqs they cite."""
    with new.lock:
        start = new.head[0] + 1
        events = list(old.query())
        mapping = {ev.seq: start + i for i, ev in enumerate(events)}
        records = []
        for ev in events:
            data = ev.data
            if isinstance(data, dict):
                data = dict(data)
                for key in SEQ_FIELDS:
                    if isinstance(data.get(key), int):
                        data[key] = mapping.get(data[key], data[key])
                if isinstance(data.get("diffs"), list):
                    data["diffs"] = [mapping.get(d, d) for d in data["diffs"]]
                data["copied_from_seq"] = ev.seq
            records.append({"kind": ev.kind, "session": ev.session, "checkpoint": ev.checkpoint,
                            "data": data})
        new.append_many(records)
    return mapping
