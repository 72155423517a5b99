"""Crash injection: run the crash plan in a child, SIGKILL it at a random moment, check the aftermath.

A *trial* starts from an empty target and runs one to three children. The first
executes the plan from the start; later ones resume from the last resumable
checkpoint (so kills also land inside rollbacks and resumed runs). Each child is
killed with SIGKILL sent to its whole process group (a ``cp`` it runs dies with
it) at a moment drawn from the trial's seeded random generator:

- ``timed``: a delay drawn over the whole length of a run, counted from the
  moment the child starts to open the engine;
- ``after-line``: right after the child reports its k-th completed checkpoint,
  which lands in the snapshot-file write and the next filesystem snapshot;
- ``after-line-jitter``: a short random delay after that line.

A *targeted* trial (``run_targeted_trial``) instead has its child SIGKILL itself
at the n-th of one operation that a random kill rarely hits: inside a snapshot
point's open log transaction, a snapshot file's write, or a filesystem snapshot
(``KILL_SITES``); the aftermath is checked the same way.

Children slow-walk with tiny random work inside checkpoints (``steps.py``).
After each kill a new engine in this process (it takes over the stale lock)
checks the aftermath; after the last kill it resumes from the last resumable
checkpoint, compares with an uninterrupted run, and resumes from every other
offered checkpoint as well.

Run as ``python -m tests.faults.harness --target SPEC --mode run|resume`` this
module is the child.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import linecache
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installengine.snapshots import (
    DirectoryTarget,
    SnapshotUnavailableError,
    materialize,
    state_digest,
    target_from_spec,
)
from installengine.snapshots.targets.directory import STATE_DIR_NAME
from installengine.statemachine import EngineError, InstallEngine, ProgressEvent, Status

from .steps import NAMES, register_plan, set_app_cache

ROOT = Path(__file__).resolve().parents[2]
#: a child that has not ended this long after its start is hung
CHILD_TIMEOUT = 120.0
#: entries at the top of a target root (or of a copy of it) that are not install files
NOT_INSTALL_FILES = {STATE_DIR_NAME, ".zfs", f".{STATE_DIR_NAME}-id"}

Tree = dict[str, tuple[Any, ...]]


# -- the child ------------------------------------------------------------------------------


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.harness")
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=["run", "resume"], default="run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--kill-in", choices=sorted(KILL_SITES), default=None,
                        help="SIGKILL this process inside the nth such operation")
    parser.add_argument("--kill-nth", type=int, default=1)
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.kill_in is not None:
        _kill_inside(args.kill_in, args.kill_nth)

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    rng = random.Random(args.seed)
    jitter = args.jitter_ms / 1000.0

    def work() -> None:
        # Tiny random work between a checkpoint's edits: it only moves the kill windows.
        if jitter > 0:
            time.sleep(rng.uniform(0, jitter))

    def on_progress(event: ProgressEvent) -> None:
        if event.message == "completed":
            say(f"completed {event.checkpoint}")

    say("ready")
    engine = InstallEngine(args.target)
    say("opened")
    say(f"session {engine.session.id}")
    register_plan(engine)
    engine.volatile["work"] = work
    engine.progress_listeners.append(on_progress)
    set_app_cache(engine)
    if args.mode == "run":
        result = engine.execute()
    else:
        start = engine.resumable()[-1]
        say(f"resume {start}")
        result = engine.execute(start_from=start)
    say(f"result {result.status.name}")
    for name, info in result.errors.items():
        say(f"error {name}: {info.type}: {info.message}")
    engine.close()
    say("closed")
    return 0 if result.status is Status.SUCCESS else 1


#: where a child kills itself, just before the C call that performs an operation: the
#: function called, the file and function it is called from, a text on the calling line,
#: and a function that must be further up the stack
KILL_SITES: dict[str, tuple[str, str, str, str, str | None]] = {
    # a snapshot point's log transaction, its events inserted, before its COMMIT: the
    # child prints the seqs it was writing, which the log must then not hold
    "log-commit": ("execute", "sqlite_utils/db.py", "atomic", "COMMIT", "_append_points"),
    # a snapshot file's temp file, written, before it is synced and renamed
    "snapshot-file-write": ("fsync", "snapshots/store.py", "write", "fsync(fd)", None),
    # a copied root, synced, before the rename that makes it a filesystem snapshot
    "filesystem-snapshot": ("rename", "targets/directory.py", "snapshot", "rename(tmp", None),
}


def _kill_inside(site: str, nth: int) -> None:
    """SIGKILL this process (its whole group) at the ``nth`` call of a ``KILL_SITES`` operation.

    A profile hook sees each C call, and at the chosen one the process kills
    itself before the call runs. Nothing is faked: the process really dies
    there, with whatever the operation had written so far.
    """
    func, filename, caller, marker, outer = KILL_SITES[site]
    seen = [0]

    def called_from(frame: Any, name: str) -> bool:
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False

    def hook(frame: Any, event: str, arg: Any) -> None:
        if (event != "c_call" or getattr(arg, "__name__", None) != func
                or frame.f_code.co_name != caller
                or not frame.f_code.co_filename.endswith(filename)
                or marker not in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                or (outer is not None and not called_from(frame, outer))):
            return
        seen[0] += 1
        if seen[0] != nth:
            return
        up = frame
        while up is not None and up.f_code.co_name != "append_many":
            up = up.f_back
        if up is not None and up.f_locals.get("rows"):
            seqs = [row[0] for row in up.f_locals["rows"]]
            sys.stdout.write(f"pending {seqs[0]} {seqs[-1]}\n")
            sys.stdout.flush()
        os.killpg(os.getpgid(0), signal.SIGKILL)

    sys.setprofile(hook)
    threading.setprofile(hook)


# -- trees of files ---------------------------------------------------------------------------


def tree(root: Path) -> Tree:
    """Every install file under ``root``: path -> (kind, mode, content hash or link target)."""
    found: Tree = {}

    def walk(where: Path, rel: str) -> None:
        for entry in sorted(os.scandir(where), key=lambda e: e.name):
            if not rel and entry.name in NOT_INSTALL_FILES:
                continue
            path = f"{rel}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                found[path] = ("link", os.readlink(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                found[path] = ("dir", st.st_mode & 0o7777)
                walk(Path(entry.path), f"{path}/")
            else:
                digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                found[path] = ("file", st.st_mode & 0o7777, digest)

    walk(root, "")
    return found


def tree_diff(a: Tree, b: Tree) -> str:
    """One line naming the first differences between two trees."""
    keys = sorted(set(a) | set(b))
    bad = [k for k in keys if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)} != {b.get(k)}" for k in bad[:3]) or "equal"


# -- the uninterrupted run ---------------------------------------------------------------------


@dataclass
class Reference:
    """What an uninterrupted run of the plan leaves: states and files at every point."""

    states: dict[tuple[str, str], dict[str, Any]]
    trees: dict[tuple[str, str], Tree]
    final_state: dict[str, Any]
    final_tree: Tree
    #: seconds from the child's "ready" line to its "result" line
    duration: float


def build_reference(workdir: Path) -> Reference:
    """Run the plan once in a child on a ``dir:`` target, uninterrupted, and record it."""
    target = DirectoryTarget(workdir / "reference")
    child = Child.start(target.spec, "run", seed=0, jitter_ms=0.0, workdir=workdir)
    child.wait_line("ready")
    began = time.monotonic()
    child.proc.wait(CHILD_TIMEOUT)
    child.finish()
    duration = time.monotonic() - began
    if child.proc.returncode != 0 or "result SUCCESS" not in child.lines:
        raise RuntimeError(f"the uninterrupted run failed: {child.lines} {child.stderr()}")
    states: dict[tuple[str, str], dict[str, Any]] = {}
    trees: dict[tuple[str, str], Tree] = {}
    with InstallEngine(target) as engine:
        register_plan(engine)
        rec = engine._recorder
        chain = rec.lineage.chain()
        for point in chain:
            key = (point.checkpoint, point.when.value)
            states[key], _ = materialize(engine.log, rec.lineage, point.seq, None)
            if point.fs_snapshot is not None:
                trees[key] = tree(target.state_dir / "fs" / point.fs_snapshot)
        final_state, _ = materialize(engine.log, rec.lineage, chain[-1].seq, None)
    if len(states) != 2 * len(NAMES):
        raise RuntimeError(f"the uninterrupted run recorded {len(states)} points")
    return Reference(states, trees, final_state, tree(target.root), duration)


# -- a child process and its kill ----------------------------------------------------------------


@dataclass
class Child:
    proc: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    #: (time received, line)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, spec: str, mode: str, *, seed: int, jitter_ms: float, workdir: Path,
              kill_in: tuple[str, int] | None = None) -> Child:
        """Start a child; with ``kill_in=(site, n)`` it SIGKILLs itself inside that operation."""
        workdir.mkdir(parents=True, exist_ok=True)
        stderr_path = workdir / f"child-{seed}-{mode}.err"
        extra = ["--kill-in", kill_in[0], "--kill-nth", str(kill_in[1])] if kill_in else []
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.harness", "--target", spec, "--mode", mode,
                 "--seed", str(seed), "--jitter-ms", str(jitter_ms), *extra],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True)
        child = cls(proc, stderr_path)
        child._reader = threading.Thread(target=child._read, daemon=True)
        child._reader.start()
        return child

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith("\n"):  # a line cut by the kill was never flushed whole
                line = raw.rstrip("\n")
                self.lines.append(line)
                self.timeline.append((time.monotonic(), line))
                self._queue.put(line)
        self._queue.put(None)

    def next_line(self, timeout: float = CHILD_TIMEOUT) -> str | None:
        """The next line, or None at the end of the output."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"child printed nothing for {timeout:.0f} s: {self.lines}") from None

    def wait_line(self, prefix: str) -> str | None:
        while (line := self.next_line()) is not None:
            if line.startswith(prefix):
                return line
        return None

    def kill(self) -> bool:
        """SIGKILL the child's process group; True when that is what ended it.

        Returns once every process of the group is gone: a ``cp`` the child was
        forking still holds the child's descriptors, the target lock among them,
        for a moment after the child itself is reaped.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(CHILD_TIMEOUT)
        _wait_until_group_is_gone(self.proc.pid)
        return self.proc.returncode == -signal.SIGKILL

    def finish(self) -> None:
        self.proc.wait(CHILD_TIMEOUT)
        if self._reader is not None:
            self._reader.join(CHILD_TIMEOUT)

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-2000:]

    @property
    def reported(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith("completed ")]


def _wait_until_group_is_gone(pgid: int, timeout: float = 10.0) -> None:
    """Poll /proc until no live (non-zombie) process is in process group ``pgid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                alive = True
                break
        if not alive:
            return
        time.sleep(0.001)
    raise RuntimeError(f"process group {pgid} outlived its SIGKILL by {timeout:.0f} s")


def kill_at_random(child: Child, rng: random.Random, *, duration: float, jitter_ms: float) -> bool:
    """Kill ``child`` at a moment drawn from ``rng``; True when it was killed, not finished."""
    if child.wait_line("ready") is None:
        child.finish()
        return False
    per_checkpoint = duration / len(NAMES) + 3 * jitter_ms / 1000.0
    policy = rng.choices(["timed", "after-line", "after-line-jitter"], [50, 25, 25])[0]
    if policy == "timed":
        delay = rng.uniform(0, len(NAMES) * per_checkpoint)
        # the child ending first is a run that was not killed
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(delay)
    else:
        remaining = len(NAMES)
        target_count = None
        seen = 0
        while (line := child.next_line()) is not None:
            if line.startswith("resume "):
                remaining = len(NAMES) - NAMES.index(line.split(" ", 1)[1])
            elif line.startswith("completed "):
                if target_count is None:
                    target_count = rng.randint(1, max(1, remaining))
                seen += 1
                if seen >= target_count:
                    break
        if line is not None and policy == "after-line-jitter":
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(rng.uniform(0, per_checkpoint))
    killed = child.proc.poll() is None and child.kill()
    child.finish()
    return killed


# -- checking -------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the trials found; every list must stay empty."""

    trials: int = 0
    kills: int = 0
    offers_checked: int = 0
    resumes_checked: int = 0
    runs_equal: int = 0
    unsafe: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unequal: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    moments: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        for name in ("trials", "kills", "offers_checked", "resumes_checked", "runs_equal"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("unsafe", "lost", "unequal", "other"):
            getattr(self, name).extend(getattr(other, name))
        self.moments.update(other.moments)

    def as_json(self) -> dict[str, Any]:
        return {"trials": self.trials, "kills": self.kills, "offers_checked": self.offers_checked,
                "resumes_checked": self.resumes_checked, "runs_equal": self.runs_equal,
                "unsafe": self.unsafe, "lost": self.lost, "unequal": self.unequal,
                "other": self.other, "moments": dict(self.moments)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        stats = cls(**{k: v for k, v in data.items() if k != "moments"})
        stats.moments = Counter(data["moments"])
        return stats

    @property
    def problems(self) -> list[str]:
        return self.unsafe + self.lost + self.unequal + self.other


def _wal_has_uncommitted_frames(wal: Path) -> bool:
    """Whether the WAL ends in frames of its current generation that no commit frame closes."""
    try:
        data = wal.read_bytes()
    except OSError:
        return False
    if len(data) < 32 or int.from_bytes(data[:4], "big") not in (0x377F0682, 0x377F0683):
        return False
    page = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    frame = 24 + page
    offset, last_commits = 32, True
    while offset + 24 <= len(data) and data[offset + 8 : offset + 16] == salt:
        if offset + frame > len(data):
            return True  # a frame cut short
        last_commits = int.from_bytes(data[offset + 4 : offset + 8], "big") != 0
        offset += frame
    return not last_commits


def _leftovers(spec: str) -> set[str]:
    target = target_from_spec(spec)
    found = set()
    for sub in ("snapshots", "fs"):
        where = target.state_dir / sub
        if where.is_dir():
            found |= {f"{sub}/{e}" for e in os.listdir(where) if e.startswith(".tmp-")}
    return found


def classify_moment(spec: str, before: set[str], last_kind: str | None) -> str:
    """Where a kill landed, from what it left behind and the last event of the killed session."""
    new = _leftovers(spec) - before
    if any(e.startswith("fs/") for e in new):
        return "filesystem snapshot"
    if any(e.startswith("snapshots/") for e in new):
        return "snapshot-file write"
    state_dir = target_from_spec(spec).state_dir
    if _wal_has_uncommitted_frames(state_dir / "log.db-wal"):
        return "log commit"
    return {None: "opening the engine", "checkpoint-started": "inside a checkpoint",
            "checkpoint-completed": "between checkpoints", "rolled-back": "after a rollback",
            "execution-finished": "at the end", "transition": "at the end",
            "session-ended": "at the end"}.get(last_kind, "before the first checkpoint")


def check_aftermath(spec: str, child: Child, mode: str, previous: int, ref: Reference,
                    stats: Stats, tag: str) -> int:
    """Open a new engine after a kill and check the log, completions and offers; return completions."""
    names = NAMES
    reported = child.reported
    base = 0
    for line in child.lines:
        if line.startswith("resume "):
            base = names.index(line.split(" ", 1)[1])
    with InstallEngine(spec) as engine:
        register_plan(engine)
        report = engine.log.verify()
        if not report.ok:
            stats.other.append(f"{tag}: log does not verify: {report}")
        # A child killed after it printed its result may have released the lock already
        # (close() clears the holder record before the child prints "closed"): only one
        # killed before that must have left a stale lock to take over.
        ending = any(line.startswith("result ") for line in child.lines)
        if "opened" in child.lines and not ending:
            takeovers = list(engine.log.query(session=engine.session.id, kind="lock-taken-over"))
            if not takeovers:
                stats.other.append(f"{tag}: the stale lock was taken over without an event")
        rec = engine._recorder
        done = [p.checkpoint for p in rec.lineage.completed()]
        n = len(done)
        if done != names[:n]:
            stats.lost.append(f"{tag}: lineage completions out of order: {done}")
        chain_seqs = {p.seq for p in rec.lineage.chain()}
        completed_events = list(engine.log.query(kind="checkpoint-completed"))
        for name in reported:
            if name not in done:
                stats.lost.append(f"{tag}: {name} was reported completed but the lineage has {done}")
            elif not any(ev.checkpoint == name and ev.data.get("point") in chain_seqs
                         for ev in completed_events):
                stats.lost.append(f"{tag}: no checkpoint-completed event for {name} in the lineage")
        expected = {base + len(reported), base + len(reported) + 1}
        if not reported and mode == "resume":
            expected.add(previous)
        if n not in expected:
            stats.lost.append(f"{tag}: {n} completions in the lineage, expected one of "
                              f"{sorted(expected)} (reported {reported})")
        decisions = rec.decide(engine._registered())
        offered = [d.verdict.name for d in decisions if d.verdict.resumable]
        if offered != engine.resumable():
            stats.other.append(f"{tag}: resumable() disagrees with the decisions")
        if mode == "run" and offered != names[: min(n + 1, len(names))]:
            stats.other.append(f"{tag}: offered {offered} after {n} completions")
        for index, decision in enumerate(decisions):
            if decision.verdict.resumable:
                stats.offers_checked += 1
                _check_offer(engine, index, decision, ref, stats, tag)
        for path, ok, _ in rec.verify_files():
            if not ok:
                stats.other.append(f"{tag}: snapshot file {Path(path).name} does not verify")
    return n


def _check_offer(engine: InstallEngine, index: int, decision: Any, ref: Reference,
                 stats: Stats, tag: str) -> None:
    name = decision.verdict.name
    point = decision.point
    if point is None:
        if index != 0:
            stats.unsafe.append(f"{tag}: {name} is offered without a snapshot point")
        return
    rec = engine._recorder
    if not point.durable:
        stats.unsafe.append(f"{tag}: {name} is offered from a volatile point {point.label}")
    if point.seq not in {p.seq for p in rec.lineage.chain()}:
        stats.unsafe.append(f"{tag}: {name} is offered from {point.label}, outside the lineage")
    try:
        state, _ = materialize(engine.log, rec.lineage, point.seq, rec.store)
        from_log, _ = materialize(engine.log, rec.lineage, point.seq, None)
    except SnapshotUnavailableError as err:
        stats.unsafe.append(f"{tag}: {name} is offered but {point.label} does not materialize: {err}")
        return
    if state_digest(state) != point.digest or state != from_log:
        stats.unsafe.append(f"{tag}: {name}: {point.label} does not match its digest")
    if state != ref.states[(point.checkpoint, point.when.value)]:
        stats.unsafe.append(f"{tag}: {name}: {point.label} differs from the uninterrupted run")
    target = engine.target
    if point.fs_snapshot is not None and target is not None:
        snaps = {(s.name, s.id) for s in target.list_snapshots()}
        if (point.fs_snapshot, point.fs_id) not in snaps:
            stats.unsafe.append(f"{tag}: {name} is offered but {point.fs_snapshot} is gone")
        elif isinstance(target, DirectoryTarget):
            copy = tree(target.state_dir / "fs" / point.fs_snapshot)
            want = ref.trees[(point.checkpoint, point.when.value)]
            if copy != want:
                stats.unsafe.append(f"{tag}: {name}: {point.fs_snapshot} holds other files: "
                                    f"{tree_diff(copy, want)}")


def finish_trial(spec: str, ref: Reference, stats: Stats, tag: str) -> None:
    """Resume from the last resumable checkpoint to the end, then from every other offer."""
    names = NAMES
    with InstallEngine(spec) as engine:
        register_plan(engine)
        offered = engine.resumable()
        last = offered[-1]
        set_app_cache(engine)
        result = engine.execute(start_from=last)
        stats.resumes_checked += 1
        if result.status is not Status.SUCCESS:
            stats.unsafe.append(f"{tag}: resuming from {last} ended {result.status.name}: "
                                f"{ {k: v.message for k, v in result.errors.items()} }")
            return
        state = engine.cache.to_plain()
        files = tree(engine.target.root) if engine.target else {}
        if state == ref.final_state and files == ref.final_tree:
            stats.runs_equal += 1
        else:
            stats.unequal.append(f"{tag}: resumed from {last}, ended with other state "
                                 f"({state != ref.final_state}) or files "
                                 f"({tree_diff(files, ref.final_tree)})")
        for name in reversed(offered[:-1]):
            i = names.index(name)
            result = engine.execute(start_from=name, pause_before=names[i + 1])
            stats.resumes_checked += 1
            if result.status is not Status.PAUSED:
                stats.unsafe.append(f"{tag}: resuming from {name} ended {result.status.name}")
                continue
            files = tree(engine.target.root) if engine.target else {}
            if engine.cache.to_plain() != ref.states[(name, "completed")]:
                stats.unsafe.append(f"{tag}: resuming from {name} gave another state")
            if files != ref.trees[(name, "completed")]:
                stats.unsafe.append(f"{tag}: resuming from {name} gave other files: "
                                    f"{tree_diff(files, ref.trees[(name, 'completed')])}")
        if not engine.log.verify().ok:
            stats.other.append(f"{tag}: the log does not verify after the resumes")


def _last_kind(spec: str) -> str | None:
    """The kind of the last event in the log (None when there is no log or no event)."""
    from installengine.eventlog import EventLog

    path = target_from_spec(spec).state_dir / "log.db"
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        with EventLog.open(path, readonly=True) as log:
            last = next(log.query(newest_first=True, limit=1), None)
    except EngineError:
        return None
    return last.kind if last is not None else None


def run_trial(seed: int, workdir: Path, ref: Reference, stats: Stats, *,
              make_spec: Callable[[Path], str]) -> None:
    """One trial: one to three killed children on a new target, a check after each, a resume."""
    rng = random.Random(seed)
    spec = make_spec(workdir)
    kills = rng.choices([1, 2, 3], [70, 20, 10])[0]
    previous = 0
    stats.trials += 1
    for k in range(kills):
        mode = "run" if k == 0 else "resume"
        tag = f"trial {seed} child {k + 1} ({mode})"
        jitter_ms = rng.choice([0.0, 0.2, 1.0, 3.0])
        before = _leftovers(spec) if k else set()
        child = Child.start(spec, mode, seed=seed * 10 + k, jitter_ms=jitter_ms,
                            workdir=workdir / "children")
        killed = kill_at_random(child, rng, duration=ref.duration, jitter_ms=jitter_ms)
        if killed:
            stats.kills += 1
            stats.moments[classify_moment(spec, before, _last_kind(spec))] += 1
        elif child.proc.returncode != 0 or "closed" not in child.lines:
            stats.other.append(f"{tag}: child ended by itself with {child.proc.returncode}: "
                               f"{child.lines[-3:]} {child.stderr()}")
        try:
            previous = check_aftermath(spec, child, mode, previous, ref, stats, tag)
        except EngineError as err:
            stats.other.append(f"{tag}: reopening raised {type(err).__name__}: {err}")
            return
    try:
        finish_trial(spec, ref, stats, f"trial {seed} final")
    except EngineError as err:
        stats.unsafe.append(f"trial {seed} final: resuming raised {type(err).__name__}: {err}")


def run_targeted_trial(site: str, nth: int, workdir: Path, ref: Reference, stats: Stats, *,
                       make_spec: Callable[[Path], str]) -> tuple[str, Child]:
    """One trial whose child kills itself inside the ``nth`` ``site`` operation.

    Returns the moment the kill is classified as, and the child.

    The random trials rarely land inside a commit or a file write, which take a
    fraction of a millisecond; this puts a kill exactly there, then checks the
    aftermath and resumes as a random trial does.
    """
    spec = make_spec(workdir)
    tag = f"{site} #{nth}"
    stats.trials += 1
    child = Child.start(spec, "run", seed=nth, jitter_ms=0.0, workdir=workdir / "children",
                        kill_in=(site, nth))
    child.finish()
    _wait_until_group_is_gone(child.proc.pid)
    if child.proc.returncode != -signal.SIGKILL:
        stats.other.append(f"{tag}: the child was not killed but ended with "
                           f"{child.proc.returncode}: {child.lines[-3:]} {child.stderr()}")
        return "not killed", child
    stats.kills += 1
    moment = classify_moment(spec, set(), _last_kind(spec))
    stats.moments[moment] += 1
    check_aftermath(spec, child, "run", 0, ref, stats, tag)
    finish_trial(spec, ref, stats, f"{tag} final")
    return moment, child


def run_trials(workdir: Path, ref: Reference, *, make_spec: Callable[[Path], str],
               first_seed: int = 0, trials: int | None = None, min_kills: int | None = None,
               jobs: int = 1, cleanup: Callable[[str], None] | None = None,
               on_trial: Callable[[Stats], None] | None = None) -> Stats:
    """Run trials from ``first_seed`` on ``jobs`` threads until ``trials`` ran or ``min_kills`` kills.

    The directory of a trial that found nothing is removed at once; one that
    found a problem is kept for a post-mortem.
    """
    stats = Stats()
    lock = threading.Lock()
    next_seed = [first_seed]

    def enough() -> bool:
        if trials is not None and next_seed[0] - first_seed >= trials:
            return True
        return min_kills is not None and stats.kills >= min_kills

    def worker() -> None:
        while True:
            with lock:
                if enough():
                    return
                seed = next_seed[0]
                next_seed[0] += 1
            where = workdir / f"trial-{seed}"
            local = Stats()
            try:
                run_trial(seed, where, ref, local, make_spec=make_spec)
            except Exception as err:  # a broken trial is a finding, not the end of the run
                local.other.append(f"trial {seed}: {type(err).__name__}: {err}")
            finally:
                if cleanup is not None:
                    cleanup(make_spec(where))
            if not local.problems:
                shutil.rmtree(where, ignore_errors=True)
            with lock:
                stats.merge(local)
                if on_trial is not None:
                    on_trial(stats)

    threads = [threading.Thread(target=worker, name=f"crash-trials-{i}") for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


def dir_spec(workdir: Path) -> str:
    return f"dir:{workdir / 'target'}"


def zfs_spec_for(pool: str) -> Callable[[Path], str]:
    """Specs of fresh, empty datasets under ``pool``, one per trial directory (created here)."""
    def make(workdir: Path) -> str:
        dataset = f"{pool}/faults-{workdir.name}"
        listed = subprocess.run(["zfs", "list", "-H", "-o", "name", dataset], capture_output=True,
                                check=False)
        if listed.returncode != 0:
            subprocess.run(["zfs", "create", "-p", dataset], capture_output=True, check=True)
        return f"zfs:{dataset}"
    return make


def destroy_zfs(spec: str) -> None:
    """``zfs destroy -r`` after unmounting deepest first (zfs-fuse calls mounted datasets busy)."""
    dataset = spec.removeprefix("zfs:")
    listed = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-r", dataset],
                            capture_output=True, text=True, check=False)
    for name in sorted(listed.stdout.split(), reverse=True):
        subprocess.run(["zfs", "unmount", name], capture_output=True, check=False)
    subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False)


def zfs_ready(pool: str) -> str | None:
    """None when ``zfs:<pool>/...`` targets work here, else why not."""
    if shutil.which("zfs") is None:
        return "zfs is not installed"
    try:
        probe = zfs_spec_for(pool)(Path(f"probe-{os.getpid()}"))
    except subprocess.CalledProcessError as err:
        return f"cannot create a dataset under {pool}: {err.stderr!r}"
    try:
        with InstallEngine(probe) as engine:
            _ = engine.target.root if engine.target else None
    except EngineError as err:
        return f"the zfs target is not ready: {err}"
    finally:
        destroy_zfs(probe)
    return None


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
