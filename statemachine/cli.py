"""The ``installengine`` command line: a thin layer over the library.

Each command loads a plan or opens a log, calls the library, and prints what
came back. Failures are library errors; :data:`EXIT_CODES` is the one table
that turns an error class into an exit code, and every error is printed as
one ``Error: <message>`` line on stderr (with the traceback only under
``--debug``).

``list``, ``history`` and ``verify`` open the log read-only and take no lock,
so they never write to it and can run while an install is in progress; they
compute what they show from the log itself, without an engine.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import orjson
from installengine.eventlog import EngineError, Event, EventKind, EventLog, UsageError, VerifyReport

from .results import ProgressEvent, Result, Status

if TYPE_CHECKING:
    from installengine.snapshots import Lineage, SnapshotStore, Target
    from installengine.snapshots.retention import PrunePlan

    from .engine import InstallEngine
    from .plan import Plan

# The engine and the snapshot layer are imported inside the commands that use them,
# so that `installengine --help` (and a typo) costs click and these definitions only.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_CANCELED = 130

def exit_codes() -> dict[type[BaseException], int]:
    """Error class -> exit code; the most specific class in an error's MRO wins."""
    from .errors import (
        EngineStateError,
        LogIntegrityError,
        LogWriteError,
        NotResumableError,
        PlanError,
        RegistrationError,
        SchemaVersionError,
        SnapshotUnavailableError,
        TargetError,
        TargetLockedError,
    )

    return {
    NotResumableError: EXIT_REFUSED,
    TargetLockedError: EXIT_REFUSED,
    PlanError: EXIT_USAGE,
    RegistrationError: EXIT_USAGE,
    UsageError: EXIT_USAGE,
    EngineStateError: EXIT_USAGE,
    LogIntegrityError: EXIT_USAGE,
    SchemaVersionError: EXIT_USAGE,
    TargetError: EXIT_USAGE,
    SnapshotUnavailableError: EXIT_FAILED,
    LogWriteError: EXIT_FAILED,
    EngineError: EXIT_FAILED,
    click.UsageError: EXIT_USAGE,
    }

#: the session id the read-only commands evaluate the rules with: no point is
#: this session's, which is exactly what a new process after a restart sees
NO_SESSION = "<none>"

_STATUS_EXIT = {Status.SUCCESS: EXIT_OK, Status.PAUSED: EXIT_OK, Status.FAILED: EXIT_FAILED,
                Status.INIT_FAILED: EXIT_FAILED, Status.CANCELED: EXIT_CANCELED}


def exit_code_for(err: BaseException) -> int:
    """The exit code :func:`exit_codes` gives ``err``; 1 for anything it does not list."""
    codes = exit_codes()
    for cls in type(err).__mro__:
        if cls in codes:
            return codes[cls]
    return EXIT_FAILED


class _Failure(Exception):
    """An error already turned into its message and exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str) -> None:
    click.echo(f"Error: {_one_line(message)}", err=True)


def _note(message: str) -> None:
    click.echo(message, err=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _Commands(click.Group):
    """The command group: library errors become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, _Failure):
            raise
        except BrokenPipeError:
            # The reader went away (`installengine history | head`): not an error of ours.
            _silence_stdout()
            return None
        except EngineError as err:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise _Failure(str(err), exit_code_for(err)) from err
        except Exception as err:
            if ctx.params.get("debug"):
                traceback.print_exc()
            hint = "" if ctx.params.get("debug") else " (run with --debug for the traceback)"
            raise _Failure(f"unexpected {type(err).__name__}: {err}{hint}",
                           EXIT_FAILED) from err

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or "installengine", complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else EXIT_OK
        except click.UsageError as err:
            where = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
            _error(f"{err.format_message()}{where}")
            code = err.exit_code
        except click.ClickException as err:
            _error(err.format_message())
            code = err.exit_code
        except _Failure as err:
            _error(err.message)
            code = err.exit_code
        except click.Abort:  # Ctrl-C outside a run
            code = EXIT_CANCELED
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(name="installengine", cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="installengine")
def cli(debug: bool) -> None:
    """Run, inspect and resume installs made of checkpoints.

    Exit codes: 0 success (or paused as asked), 1 a checkpoint failed or verify
    found a mismatch, 2 usage or input error, 3 refused (not resumable, target
    locked), 130 canceled or interrupted.

    \b
    Example:
      installengine demo
    """
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("installengine")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)


def main() -> None:
    """The ``installengine`` console script."""
    cli.main(prog_name="installengine")


# -- shared options ------------------------------------------------------------------------

_PLAN_ARG = click.argument("plan_file", metavar="PLAN",
                           type=click.Path(dir_okay=True, path_type=Path))
_TARGET_HELP = "Target spec (dir:/path, state:/path, zfs:pool/ds, btrfs:/path); overrides the plan's."


def _json_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--log", "log_file", type=click.Path(path_type=Path),
                     help="Path of a log.db file (instead of --target).")(f)
    return click.option("--target", "target_spec", metavar="T",
                        help="Target whose log to read (dir:/path, state:/path, ...).")(f)


def _log_path(target_spec: str | None, log_file: Path | None) -> Path:
    if target_spec and log_file:
        raise click.UsageError("pass --target or --log, not both")
    if log_file is not None:
        return log_file
    if target_spec:
        from installengine.snapshots import target_from_spec

        from .engine import LOG_NAME

        return target_from_spec(target_spec).state_dir / LOG_NAME
    raise click.UsageError("which log? pass --target T or --log FILE")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- run -------------------------------------------------------------------------------------

@cli.command()
@_PLAN_ARG
@click.option("--target", "target_spec", metavar="T", help=_TARGET_HELP)
@click.option("--start-from", metavar="X", help="Roll back to before checkpoint X and run from it.")
@click.option("--resume", is_flag=True,
              help="Resume from the latest resumable checkpoint (what `list` marks last).")
@click.option("--pause-before", metavar="X", help="Run the checkpoints before X, then pause.")
@click.option("--dry-run", is_flag=True, help="Run the checkpoints with ctx.dry_run set; "
              "no snapshot points are taken.")
@_json_option("Print JSON Lines of progress and events, then one result object.")
def run(plan_file: Path, target_spec: str | None, start_from: str | None, resume: bool,
        pause_before: str | None, dry_run: bool, as_json: bool) -> None:
    """Execute the plan's checkpoints, with a live progress bar on a terminal.

    The first Ctrl-C pauses after the running checkpoint completes; a second
    one (or SIGTERM) cancels it. Both exit 130; continue with --resume.

    \b
    Example:
      installengine run plan.toml --pause-before configure
    """
    from .engine import InstallEngine
    from .plan import load_plan, register_plan

    if start_from and resume:
        raise click.UsageError("--start-from and --resume cannot be used together; pick one")
    plan = load_plan(plan_file)
    spec = target_spec or plan.target
    again = f"installengine run {plan_file}" + (f" --target {target_spec}" if target_spec else "")
    if spec is None:
        _note("note: no target: the log lives in a temporary area removed when this run "
              "ends, so nothing will be resumable afterwards (pass --target to keep it)")
    with plan.importable(), InstallEngine(spec, stop_on_error=plan.stop_on_error) as engine:
        register_plan(engine, plan)
        if resume:
            start_from = _resume_point(engine, plan)
            if start_from is None:
                if as_json:
                    click.echo(_dumps(Result(Status.SUCCESS).as_json()))
                else:
                    click.echo("Every checkpoint of the plan has completed: nothing to resume.")
                return
            _note(f"resuming from {start_from!r} (the latest resumable checkpoint)")
        view = _JsonView(engine) if as_json else _HumanView(engine)
        engine.progress_listeners.append(view.progress)
        with view:
            handle = engine.start(start_from=start_from, pause_before=pause_before,
                                  dry_run=dry_run)
            with _Interrupts(engine, view) as interrupts:
                result = None
                while result is None:
                    # Waiting in slices keeps the main thread free to run signal handlers.
                    result = handle.wait(0.25)
            view.finish(result)
    code = _STATUS_EXIT[result.status]
    if result.status in (Status.PAUSED, Status.SUCCESS) and interrupts.count:
        # Ctrl-C always exits 130, so a script can tell it was interrupted; when it came
        # during the last checkpoint there was nothing left to pause before, and the
        # summary says the install is complete.
        code = EXIT_CANCELED
    if not as_json:
        _summarise(result, view.last_completed, pause_before, again,
                   interrupted=bool(interrupts.count))
    if code:
        click.get_current_context().exit(code)


def _resume_point(engine: InstallEngine, plan: Plan) -> str | None:
    """The latest checkpoint the rules allow, or None when the whole plan has completed."""
    from installengine.snapshots import read_lineage

    done = read_lineage(engine.log).completed()
    regs = plan.registrations
    if len(done) >= len(regs) and all(
            p.checkpoint == r.name and p.fingerprint == r.fingerprint
            for p, r in zip(done, regs, strict=False)):
        return None
    resumable = [v.name for v in engine.explain() if v.resumable]
    return resumable[-1] if resumable else None


def _summarise(result: Result, last_completed: str | None, pause_before: str | None,
               again: str, *, interrupted: bool) -> None:
    status = result.status
    if status is Status.SUCCESS and interrupted:
        click.echo("Done: every checkpoint requested completed; the Ctrl-C came during the "
                   "last one, so there was nothing left to pause before.")
    elif status is Status.SUCCESS:
        click.echo("Done: every checkpoint requested completed.")
    elif status is Status.PAUSED:
        where = (f"before {pause_before!r}" if pause_before and not interrupted
                 else f"after {last_completed!r}" if last_completed else "before the first checkpoint")
        click.echo(f"Paused {where}. Continue with: {again} --resume")
    elif status is Status.CANCELED:
        what = (f"{result.canceled!r} was interrupted and is not completed" if result.canceled
                else "stopped before the next checkpoint")
        _note(f"Canceled: {what}. Continue with: {again} --resume")
    else:
        failures = ", ".join(f"{name!r} ({info.type}: {_one_line(info.message)})"
                             for name, info in result.errors.items())
        label = "checkpoint" if len(result.errors) == 1 else "checkpoints"
        _error(f"{label} failed: {failures}")
        if result.failed:
            click.echo(f"Fix the cause, then retry with: {again} --start-from {result.failed[0]}")


class _Interrupts:
    """SIGINT pauses after the running checkpoint, a second SIGINT or SIGTERM cancels it."""

    def __init__(self, engine: InstallEngine, view: _View) -> None:
        self.engine = engine
        self.view = view
        self.count = 0
        self.canceling = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in ((signal.SIGINT, self._on_sigint),
                                 (signal.SIGTERM, self._on_sigterm)):
                self._saved[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            running = self.view.running
            what = f"{running!r} completes" if running else "the running checkpoint completes"
            self.view.note(f"Ctrl-C: pausing after {what}; press Ctrl-C again to cancel it")
            self.engine.pause()
        else:
            self._cancel("Ctrl-C again")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self._cancel("SIGTERM")

    def _cancel(self, why: str) -> None:
        if self.canceling:
            return
        self.canceling = True
        self.view.note(f"{why}: canceling the running checkpoint")
        # timeout=0: ask and return; the main thread goes on waiting for the result
        self.engine.cancel(timeout=0)


class _View:
    """How ``run`` shows an execution: progress events, log events, notes, the end."""

    #: event kinds not shown while running: diffs can be large, the rest is bookkeeping
    HIDDEN = frozenset({EventKind.CACHE_CHANGED, EventKind.SESSION_STARTED,
                        EventKind.CHECKPOINT_REGISTERED, EventKind.TARGET_ATTACHED})

    def __init__(self, engine: InstallEngine) -> None:
        self.engine = engine
        self.running: str | None = None
        self.last_completed: str | None = None
        self._lock = threading.Lock()
        self._seen = engine.log.head[0]
        self._closed = False

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def progress(self, event: ProgressEvent) -> None:
        self._show(lambda: self.show_progress(event))

    def finish(self, result: Result) -> None:
        self._show(lambda: self.show_result(result))

    def _show(self, show: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_log()
                show()
            except BrokenPipeError:
                # The reader of stdout went away (`| head`): stop showing, the install goes on.
                self._closed = True
                _silence_stdout()

    def _flush_log(self) -> None:
        for ev in self.engine.log.query(after_seq=self._seen):
            self._seen = ev.seq
            if ev.kind == EventKind.CHECKPOINT_STARTED:
                self.running = ev.checkpoint
            elif ev.kind == EventKind.CHECKPOINT_COMPLETED:
                self.running, self.last_completed = None, ev.checkpoint
            if ev.kind not in self.HIDDEN:
                self.show_event(ev)

    def note(self, message: str) -> None:
        _note(message)

    def show_progress(self, event: ProgressEvent) -> None:
        raise NotImplementedError

    def show_event(self, event: Event) -> None:
        raise NotImplementedError

    def show_result(self, result: Result) -> None:
        raise NotImplementedError


class _JsonView(_View):
    """JSON Lines: progress and events as they happen, then the result object."""

    def show_progress(self, event: ProgressEvent) -> None:
        click.echo(_dumps({"type": "progress", "percent": event.percent,
                           "checkpoint": event.checkpoint, "message": event.message}))

    def show_event(self, event: Event) -> None:
        click.echo(_dumps({"type": "event", **asdict(event)}))

    def show_result(self, result: Result) -> None:
        click.echo(_dumps(result.as_json()))


class _HumanView(_View):
    """A rich progress bar on a terminal, plain lines otherwise."""

    PLAIN_STEP = 5.0

    def __init__(self, engine: InstallEngine) -> None:
        super().__init__(engine)
        self._bar: Any = None
        self._task: Any = None
        self._last_line: tuple[str | None, float] | None = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self._bar = Progress(TextColumn("[bold]{task.description:<18}"), BarColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[message]}"))
            self._task = self._bar.add_task("loading", total=100, message="")

    def __enter__(self) -> _HumanView:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False, style="yellow")
        else:
            _note(message)

    def show_progress(self, event: ProgressEvent) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=event.percent,
                             description=event.checkpoint or "", message=event.message)
            return
        # Plain lines are for logs and pipes: one per checkpoint start, then one per
        # PLAIN_STEP percent at most, so a chatty checkpoint cannot flood them.
        if event.message in ("started", "completed"):
            return
        if (self._last_line is not None and event.checkpoint == self._last_line[0]
                and event.percent - self._last_line[1] < self.PLAIN_STEP
                and event.percent < 100):
            return
        self._last_line = (event.checkpoint, event.percent)
        where = f"{event.checkpoint}: " if event.checkpoint else ""
        click.echo(f"[{event.percent:5.1f}%] {where}{event.message}")

    def show_event(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == EventKind.CHECKPOINT_COMPLETED:
            self._line(f"completed {event.checkpoint}")
        elif event.kind == EventKind.CHECKPOINT_FAILED:
            self._line(f"FAILED    {event.checkpoint}: {data.get('type')}: "
                       f"{_one_line(str(data.get('message')))}")
        elif event.kind == EventKind.CHECKPOINT_CANCELED:
            self._line(f"canceled  {event.checkpoint}")
        elif event.kind == EventKind.ROLLED_BACK:
            self._line(f"rolled back to {data.get('point')} (event {data.get('to')})")

    def show_result(self, result: Result) -> None:
        if self._bar is not None and result.status is Status.SUCCESS:
            self._bar.update(self._task, completed=100, description="done", message="")


# -- list --------------------------------------------------------------------------------

@cli.command("list")
@_PLAN_ARG
@click.option("--target", "target_spec", metavar="T", help=_TARGET_HELP)
@_json_option("Print one JSON array of {name, resumable, reason, description}.")
def list_(plan_file: Path, target_spec: str | None, as_json: bool) -> None:
    """Show which checkpoints a new run may resume from, and why not.

    Reads the target's log read-only, as a new process after a restart would
    see it: only durable snapshot points count. X in the Resumable column
    marks a checkpoint `run --start-from` accepts.

    \b
    Example:
      installengine list plan.toml --target dir:/mnt/install
    """
    from installengine.snapshots import (
        Lineage,
        Registered,
        SnapshotStore,
        decide_rebuilt,
        explain,
        read_lineage,
        target_from_spec,
    )

    from .engine import LOG_NAME, SNAPSHOT_DIR
    from .plan import load_plan

    plan = load_plan(plan_file)
    spec = target_spec or plan.target
    target = target_from_spec(spec) if spec else None
    registered = [Registered(r.name, r.fingerprint) for r in plan.registrations]
    lineage, first_bad, fs = Lineage(), None, None
    log_path = target.state_dir / LOG_NAME if target else None
    if target is not None and log_path is not None and log_path.exists():
        fs = target.list_snapshots() if target.takes_fs_snapshots else None
        with EventLog.open(log_path, readonly=True) as log:
            lineage = read_lineage(log)
            first_bad = log.verify().first_bad_seq
            # as InstallEngine.explain() does: every offered point is rebuilt and checked
            verdicts = [d.verdict for d in decide_rebuilt(
                log, lineage, registered,
                store=SnapshotStore(log_path.parent / SNAPSHOT_DIR, durable=False),
                session=NO_SESSION, fs_snapshots=fs, first_bad_seq=first_bad, rebuilt=set(),
                found={})]
    else:
        verdicts = explain(lineage, registered, session=NO_SESSION, fs_snapshots=fs,
                           first_bad_seq=first_bad)
    descriptions = {c.name: c.description for c in plan.checkpoints}
    if as_json:
        click.echo(_dumps([{"name": v.name, "resumable": v.resumable, "reason": v.reason,
                            "description": descriptions[v.name]} for v in verdicts]))
        return
    rows = [(v.name, "X" if v.resumable else "", descriptions[v.name], v.reason or "")
            for v in verdicts]
    _table(("Checkpoint", "Resumable", "Description", "Reason"), rows)
    if target is None:
        _note("note: the plan names no target and none was given, so nothing is durable")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Plain aligned columns: readable on a terminal, and the same when piped to grep."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


# -- history --------------------------------------------------------------------------------

@cli.command()
@_log_options
@click.option("--session", help="Only events of this session id.")
@click.option("--kind", type=click.Choice(sorted(k.value for k in EventKind)), metavar="KIND",
              help="Only events of this kind (session-started, snapshot-taken, ...).")
@click.option("--checkpoint", help="Only events about this checkpoint.")
@click.option("--since", metavar="TIME", help="From this ISO-8601 time on (inclusive).")
@click.option("--until", metavar="TIME", help="Before this ISO-8601 time (exclusive).")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many events, oldest first.")
@click.option("--last", type=click.IntRange(min=0), help="Only the last N matching events.")
@_json_option("Print JSON Lines, one event object (the Event fields) per line.")
def history(target_spec: str | None, log_file: Path | None, session: str | None,
            kind: str | None, checkpoint: str | None, since: str | None, until: str | None,
            limit: int | None, last: int | None, as_json: bool) -> None:
    """Show the audit log: every session, execution, snapshot point and transition.

    \b
    Example:
      installengine history --target dir:/mnt/install --kind snapshot-taken
    """
    if limit is not None and last is not None:
        raise click.UsageError("--limit and --last cannot be used together; pick one")
    path = _log_path(target_spec, log_file)
    with EventLog.open(path, readonly=True) as log:
        found = log.query(session=session, kind=kind, checkpoint=checkpoint, since=since,
                          until=until, limit=last if last is not None else limit,
                          newest_first=last is not None)
        events: Iterator[Event] | list[Event] = found
        if last is not None:
            events = list(found)[::-1]
        for ev in events:
            if as_json:
                click.echo(_dumps(asdict(ev)))
            else:
                click.echo(f"{ev.seq:>6}  {ev.ts[:19]}  {ev.session[:8]:<8}  {ev.kind:<21} "
                           f"{ev.checkpoint or '-':<18} {_summary(ev)}".rstrip())


def _summary(ev: Event) -> str:
    """One short line about an event's data, for people; --json has all of it."""
    d = ev.data if isinstance(ev.data, dict) else {}
    g = d.get
    kind = ev.kind
    if kind == EventKind.SESSION_STARTED:
        return f"pid {g('pid')} on {g('host')} by {g('user')}, installengine {g('version')}"
    if kind == EventKind.CHECKPOINT_REGISTERED:
        return f"{g('call')} at position {g('position')}"
    if kind == EventKind.TARGET_ATTACHED:
        return f"{g('spec')}"
    if kind == EventKind.EXECUTION_STARTED:
        return (f"attempt {g('attempt')}, start_from={g('start_from')}, "
                f"continues from {g('continues_from')}")
    if kind in (EventKind.CHECKPOINT_STARTED, EventKind.CHECKPOINT_COMPLETED,
                EventKind.CHECKPOINT_CANCELED):
        at = g("before") if kind != EventKind.CHECKPOINT_COMPLETED else g("point")
        dry = ", dry run" if g("dry_run") else ""
        return f"attempt {g('attempt')}, point {at}{dry}"
    if kind == EventKind.SNAPSHOT_TAKEN:
        fs = f", fs {g('fs_snapshot')}" if g("fs_snapshot") else ""
        durable = "durable" if g("durable") else "volatile"
        return f"{g('point')} point, {durable}, digest {str(g('digest'))[:12]}{fs}"
    if kind == EventKind.SNAPSHOT_STORED:
        return f"file for point {g('point')}, {g('bytes')} bytes, sha256 {str(g('sha256'))[:12]}"
    if kind == EventKind.CACHE_CHANGED:
        return f"{len(g('patch') or [])} change(s) by {g('by')}"
    if kind == EventKind.CHECKPOINT_FAILED:
        return f"{g('type')}: {_one_line(str(g('message')))}"
    if kind == EventKind.ROLLED_BACK:
        return f"to event {g('to')} ({g('point')})"
    if kind == EventKind.EXECUTION_FINISHED:
        failed = f", failed {g('failed')}" if g("failed") else ""
        return f"{g('status')}{failed}"
    if kind in (EventKind.PAUSED, EventKind.CANCELED, EventKind.TRANSITION):
        return f"{g('source')} -> {g('dest')}"
    if kind in (EventKind.CLEANUP, EventKind.PRUNED):
        return (f"{len(g('removed_files') or [])} file(s), "
                f"{len(g('destroyed_fs_snapshots') or [])} fs snapshot(s) removed")
    text = _dumps(ev.data) if ev.data not in (None, {}) else ""
    return text if len(text) <= 80 else text[:77] + "..."


# -- verify -----------------------------------------------------------------------------------

@cli.command()
@_log_options
@_json_option("Print {ok, first_bad_seq, reason, snapshots: [{file, ok, rebuildable}], "
              "fs_snapshots: [{name, point, ok}]}.")
def verify(target_spec: str | None, log_file: Path | None, as_json: bool) -> None:
    """Check the log's hash chain and every snapshot file's digest; exit 1 on any mismatch.

    For each damaged snapshot file it says whether the log can rebuild it
    (then nothing is lost: files are caches of the log). With --target it also
    checks that the target still holds the filesystem snapshot of every point
    of the current lineage (removed by hand, they cannot be rebuilt).

    \b
    Example:
      installengine verify --target dir:/mnt/install
    """
    from installengine.eventlog import LogIntegrityError
    from installengine.snapshots import Lineage, SnapshotStore, read_lineage

    from .engine import SNAPSHOT_DIR

    path = _log_path(target_spec, log_file)
    with EventLog.open(path, readonly=True) as log:
        report = log.verify()
        try:
            lineage = read_lineage(log)
        except LogIntegrityError:
            lineage = Lineage()  # the log is damaged: no file can be matched to its point
        files = _check_snapshot_files(log, lineage, SnapshotStore(path.parent / SNAPSHOT_DIR,
                                                                  durable=False))
        fs = _check_fs_snapshots(lineage, target_spec) if report.ok else []
    ok = report.ok and all(f["ok"] for f in files) and all(f["ok"] for f in fs)
    if as_json:
        click.echo(_dumps({"ok": ok, "first_bad_seq": report.first_bad_seq,
                           "reason": report.reason, "snapshots": files, "fs_snapshots": fs}))
    else:
        _print_verify(path, report, files, fs)
    if not ok:
        click.get_current_context().exit(EXIT_FAILED)


def _check_snapshot_files(log: EventLog, lineage: Lineage,
                          store: SnapshotStore) -> list[dict[str, Any]]:
    """{file, ok, rebuildable} for every snapshot file; ``rebuildable`` is None for good files.

    The same check as Recorder.verify_files, from a read-only log and a store alone.
    """
    from installengine.snapshots import check_files

    return [{"file": c.file, "ok": c.ok, "rebuildable": c.rebuildable}
            for c in check_files(log, lineage, store)]


def _check_fs_snapshots(lineage: Lineage, target_spec: str | None) -> list[dict[str, Any]]:
    """{name, point, ok} for the filesystem snapshot of every point of the current lineage."""
    from installengine.snapshots import check_fs_snapshots, target_from_spec

    if target_spec is None:
        return []
    target = target_from_spec(target_spec)
    if not target.takes_fs_snapshots:
        return []
    checks = check_fs_snapshots(lineage, target.list_snapshots())
    return [{"name": c.point.fs_snapshot, "point": c.point.label, "ok": c.present}
            for c in checks]


def _print_verify(path: Path, report: VerifyReport, files: list[dict[str, Any]],
                  fs: list[dict[str, Any]]) -> None:
    if report.ok:
        click.echo(f"log {path}: {report.events} events, hash chain intact")
    else:
        trust = (f"; events before {report.first_bad_seq} are intact"
                 if report.first_bad_seq and report.first_bad_seq > 1 else "")
        click.echo(f"log {path}: MISMATCH at event {report.first_bad_seq}: {report.reason}{trust}")
    bad = [f for f in files if not f["ok"]]
    if not bad:
        click.echo(f"snapshot files: {len(files)}, every one matches its digest")
    for f in bad:
        fix = ("the log can rebuild it" if f["rebuildable"]
               else "the log cannot rebuild it: that point is not resumable")
        click.echo(f"snapshot file {f['file']}: MISMATCH ({fix})")
    gone = [f for f in fs if not f["ok"]]
    if fs and not gone:
        click.echo(f"filesystem snapshots: {len(fs)}, the target holds every one")
    for f in gone:
        click.echo(f"filesystem snapshot {f['name']} ({f['point']}): MISSING from the target; "
                   "that point and the ones after it are not resumable")
    click.echo("OK" if report.ok and not bad and not gone else "FAILED")


# -- cleanup, gc, prune ----------------------------------------------------------------------

@cli.command()
@_PLAN_ARG
@click.option("--target", "target_spec", metavar="T", help=_TARGET_HELP)
def cleanup(plan_file: Path, target_spec: str | None) -> None:
    """Remove the snapshot files and filesystem snapshots of the plan's checkpoints.

    The history stays in the log. Afterwards only the first checkpoint is
    resumable (a fresh attempt).

    \b
    Example:
      installengine cleanup plan.toml --target dir:/mnt/install
    """
    from .engine import InstallEngine
    from .plan import load_plan, register_plan

    plan = load_plan(plan_file)
    spec = target_spec or plan.target
    if spec is None:
        raise UsageError("cleanup needs a target: pass --target T or set [engine] target "
                         "in the plan")
    with plan.importable(), InstallEngine(spec, stop_on_error=plan.stop_on_error) as engine:
        register_plan(engine, plan)
        engine.cleanup()
        ev = next(engine.log.query(kind=EventKind.CLEANUP, newest_first=True, limit=1))
    click.echo(f"removed {len(ev.data['removed_files'])} snapshot file(s) and "
               f"{len(ev.data['destroyed_fs_snapshots'])} filesystem snapshot(s); the history "
               f"stays. Only {plan.names[0]!r} is resumable now.")


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc_command(dry_run: bool) -> None:
    """Remove the temporary areas of sessions whose process is gone.

    Runs without a target leave their log in a per-session temporary area
    (under $INSTALLENGINE_TMPDIR or the system temp directory); a crash can
    leave it behind. Areas of live sessions are kept.

    \b
    Example:
      installengine gc --dry-run
    """
    from installengine.snapshots import gc

    removed = gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for area in removed:
        click.echo(f"{verb} {area}")
    click.echo(f"{len(removed)} temporary area(s) {verb}")


@cli.command()
@click.option("--target", "target_spec", metavar="T", required=True, help="The target to prune.")
@click.option("--keep-last", type=click.IntRange(min=0), default=2, show_default=True,
              help="Keep the snapshots of this many of the latest snapshot points.")
@click.option("--confirm", is_flag=True, help="Remove them (without it, only show the plan).")
@_json_option("Print the plan (and what was removed) as one JSON object.")
def prune(target_spec: str, keep_last: int, confirm: bool, as_json: bool) -> None:
    """Remove snapshot files and filesystem snapshots older than the last N points.

    A dry run unless --confirm. Events are never deleted. Points older than the
    kept ones are no longer resumable once their filesystem snapshot is gone;
    removed snapshot files cost nothing but time, the log rebuilds them.

    \b
    Example:
      installengine prune --target dir:/mnt/install --keep-last 2 --confirm
    """
    from installengine.snapshots import SnapshotStore, read_lineage, target_from_spec
    from installengine.snapshots.retention import apply_prune

    from .engine import LOG_NAME, SNAPSHOT_DIR, InstallEngine

    target = target_from_spec(target_spec)
    path = target.state_dir / LOG_NAME
    if not path.exists():
        click.echo(f"nothing to prune: no log at {path}")
        return
    if not confirm:
        with EventLog.open(path, readonly=True) as log:
            plan = _prune_plan(read_lineage(log), target, keep_last)
        _print_prune(plan, as_json, applied=None)
        return
    # Applying writes: it takes the target's lock through an engine (so it refuses a target
    # in use, exit 3) and records a `pruned` event in the session the engine opens.
    with InstallEngine(target) as engine:
        plan = _prune_plan(read_lineage(engine.log), target, keep_last)
        outcome = apply_prune(plan, store=SnapshotStore(target.state_dir / SNAPSHOT_DIR,
                                                        durable=True), target=target)
        engine.log.append(EventKind.PRUNED, session=engine.session.id,
                          data={**plan.as_json(), **outcome.as_json()})
    _print_prune(plan, as_json, applied=outcome.as_json())


def _prune_plan(lineage: Lineage, target: Target, keep_last: int) -> PrunePlan:
    from installengine.snapshots import SnapshotStore
    from installengine.snapshots.retention import plan_prune

    from .engine import SNAPSHOT_DIR

    store = SnapshotStore(target.state_dir / SNAPSHOT_DIR, durable=False)
    fs = target.list_snapshots() if target.takes_fs_snapshots else []
    return plan_prune(lineage, store.files(), fs, keep_last=keep_last)


def _print_prune(plan: PrunePlan, as_json: bool, *, applied: dict[str, Any] | None) -> None:
    if as_json:
        click.echo(_dumps({**plan.as_json(), "confirmed": applied is not None,
                           **(applied or {})}))
        return
    kept = ", ".join(f"{p.seq} ({p.label})" for p in plan.kept) or "none"
    click.echo(f"keep the last {plan.keep_last} snapshot point(s): {kept}")
    verb = "removed" if applied is not None else "would remove"
    click.echo(f"{verb} {len(plan.files)} snapshot file(s)"
               + "".join(f"\n  {f.path.name}" for f in plan.files))
    verb = "destroyed" if applied is not None else "would destroy"
    click.echo(f"{verb} {len(plan.fs_snapshots)} filesystem snapshot(s)"
               + "".join(f"\n  {s.name}" for s in plan.fs_snapshots))
    if applied is None and not plan.empty:
        click.echo("dry run: nothing was removed; run again with --confirm to remove them")


# -- diagram, demo ----------------------------------------------------------------------

@cli.command()
def diagram() -> None:
    """Print the engine's lifecycle state machine as a Mermaid stateDiagram.

    \b
    Example:
      installengine diagram > lifecycle.mmd
    """
    from .lifecycle import to_mermaid

    click.echo(to_mermaid())


@cli.command()
@click.argument("directory", metavar="[DIR]", required=False,
                type=click.Path(file_okay=False, path_type=Path))
def demo(directory: Path | None) -> None:
    """Run the bundled demo install into DIR (default: a new temporary directory).

    It installs a small system image into a directory target in six
    checkpoints, pauses before one, resumes in a new process as after a
    restart, and shows `list`, `history` and `verify`. No root, no ZFS.

    \b
    Example:
      installengine demo /tmp/demo
    """
    import tempfile
    from importlib import resources

    started = time.monotonic()
    where = directory or Path(tempfile.mkdtemp(prefix="installengine-demo-"))
    where = where.absolute()
    if where.exists() and any(where.iterdir()):
        raise UsageError(f"demo directory {where} is not empty; pass a new or empty directory, "
                         "or none for a temporary one")
    where.mkdir(parents=True, exist_ok=True)
    plan_path = where / "plan.toml"
    bundled = resources.files("installengine.statemachine.demo").joinpath("plan.toml")
    plan_path.write_text('[engine]\ntarget = "dir:./target"\nstop_on_error = true\n\n'
                         + bundled.read_text())
    target = f"dir:{where / 'target'}"
    plan = str(plan_path)
    pause = "configure"

    def step(title: str, *args: str) -> None:
        click.echo()
        click.secho(f"$ installengine {' '.join(args)}", bold=True)
        click.echo(f"  # {title}")
        _child(list(args))

    click.secho(f"installengine demo: installing a small system image into {where / 'target'}",
                bold=True)
    step(f"run the install, pausing before {pause!r}; this process then ends",
         "run", plan, "--pause-before", pause)
    step("a new process reads the durable log: what may it resume from?", "list", plan)
    step("resume in a new process, as after a restart: roll back to the latest durable "
         "point and go on", "run", plan, "--resume")
    step("after the resume: every checkpoint has a durable snapshot", "list", plan)
    step("the last events of the audit log", "history", "--target", target, "--last", "12")
    step("recompute the hash chain and every snapshot file's digest", "verify",
         "--target", target)
    elapsed = time.monotonic() - started
    click.echo(_DEMO_SUMMARY.format(pause=pause, dir=where, target=target, plan=plan,
                                    elapsed=elapsed))


_DEMO_SUMMARY = """
What you just saw:
  - The first process ran discover-target, partition-plan and lay-down-files. Around each
    checkpoint the engine took a snapshot point: the data cache went into the hash-chained
    event log, and the target directory into a filesystem snapshot (a copy kept in
    {dir}/target/.installengine/fs). It paused before {pause!r}, as asked, and ended (exit 0).
  - `list` in a new process read the log read-only, the way a restart sees it: only durable
    points count, so {pause!r} was the latest resumable checkpoint and the ones after it had
    never completed.
  - `run --resume` rolled the cache and the target back to 'lay-down-files completed' and ran
    {pause!r}, bootloader-config and finalize.
  - `history` showed the audit trail, and `verify` recomputed the hash chain, checked the
    digest of every snapshot file and found every filesystem snapshot on the target.

The installed image is in {dir}/target; its log is {dir}/target/.installengine/log.db.
Try next:
  installengine list {plan}
  installengine run {plan} --start-from {pause}        # roll back and redo from {pause!r}
  installengine history --target {target} --kind snapshot-taken
  installengine prune --target {target} --keep-last 2  # dry run; add --confirm
  installengine diagram                                 # the lifecycle as Mermaid
  sqlite3 {dir}/target/.installengine/log.db 'select seq, kind, checkpoint from events'
Demo finished in {elapsed:.1f} s."""


def _child(args: list[str]) -> None:
    """Run ``installengine ARGS`` in a new process, as an operator would after a restart."""
    import subprocess

    command = [sys.executable, "-m", "installengine.statemachine", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.stdout.isatty():
        # Let the child draw its own live progress bar on the terminal.
        rc = subprocess.run(command, check=False).returncode
    else:
        # One stream, so that notes on stderr stay in place between the output lines.
        done = subprocess.run(command, check=False, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        click.echo(done.stdout, nl=False)
        rc = done.returncode
    if rc != 0:
        raise _Failure(f"demo step `installengine {' '.join(args)}` exited with {rc}; run it "
                       "yourself with --debug to see why", EXIT_FAILED)

