"""The central invariant, searched by Hypothesis: no sequence of operations lets a resume
target a checkpoint without an available snapshot, and a resume restores the state
materialized at its before-point.

The machine drives the real InstallEngine over a ``dir:`` target in a temporary
directory. Its checkpoints are one module-level function, ``step``, steered through
a ``Control`` object kept in the volatile cache (never logged, never rolled back):
it records what each checkpoint saw when it started, changes the cache and the
target deterministically, and fails, cancels or kills the process when told to.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from installengine.eventlog import EventKind, EventLog, UsageError
from installengine.snapshots import (
    CacheList,
    DirectoryTarget,
    SnapshotPoint,
    When,
    materialize,
    read_lineage,
    state_digest,
)
from installengine.snapshots import recorder as recorder_module
from installengine.statemachine import (
    CheckpointCanceled,
    Context,
    InstallEngine,
    NotResumableError,
    Status,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FILE_INTERVAL = recorder_module.MIN_FILE_INTERVAL
#: names with a dot and a dash, so the .step_<name>.<when> snapshot names are exercised
NAMES = st.sampled_from(["a", "b", "c", "d.e", "f-g"])
#: scales with the loaded hypothesis profile: 100 examples by default, more under "ci"
SCALE = max(1, settings.default.max_examples // 100)
#: real SIGKILLed child engines per test run: they cost a second each
CHILD_CRASHES = {"left": 6 * SCALE}


def fast_tmp() -> str:
    """A tmpfs when there is one: fsync there is free, and this test does many."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


@dataclass
class Control:
    """How the checkpoints of one engine behave, and what they saw (lives in ``volatile``)."""

    counter: int = 0
    fail: set[str] = field(default_factory=set)
    cancel_in: str | None = None
    pause_in: str | None = None
    kill_in: str | None = None
    attach: tuple[str, str] | None = None  # (checkpoint, target spec)
    engine: InstallEngine | None = None
    #: (checkpoint, persistent cache, files under the target root) as each one started
    observed: list[tuple[str, dict[str, Any], dict[str, str] | None]] = field(default_factory=list)


def root_files(root: Path | None) -> dict[str, str] | None:
    """The install's files under ``root``, without the state directory."""
    if root is None:
        return None
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        # the state directory, and the id file a directory target keeps in each copy
        if rel.parts[0] == ".installengine" or rel.name.endswith("installengine-id") \
                or path.is_dir():
            continue
        found[str(rel)] = path.read_text()
    return found


def step(ctx: Context) -> None:
    """The one checkpoint function: deterministic changes to the cache and the target."""
    ctl: Control = ctx.volatile["control"]
    ctl.observed.append((ctx.name, ctx.cache.to_plain(),
                         root_files(ctx.target.root if ctx.target else None)))
    if ctl.attach is not None and ctl.attach[0] == ctx.name and ctx.target is None:
        spec = ctl.attach[1]
        Path(spec.removeprefix("dir:")).mkdir(parents=True, exist_ok=True)
        ctx.attach_target(spec)
        ctl.attach = None
    ctl.counter += 1
    ctx.cache[ctx.name] = ctl.counter
    trail = ctx.cache.setdefault("trail", [])
    if isinstance(trail, CacheList):
        trail.append(ctx.name)  # an in-place change through a view read from the cache
    else:
        ctx.cache["trail"] = [ctx.name]
    if ctx.target is not None:
        (ctx.target.root / f"{ctx.name}.txt").write_text(str(ctl.counter))
    if ctx.name == ctl.kill_in:
        os.kill(os.getpid(), signal.SIGKILL)  # a real crash, halfway through a checkpoint
    if ctx.name in ctl.fail:
        raise RuntimeError(f"{ctx.name} was told to fail")
    if ctx.name == ctl.cancel_in:
        assert ctl.engine is not None
        ctl.engine.cancel()
        ctx.raise_if_canceled()
        raise CheckpointCanceled("cancel was not seen")
    if ctx.name == ctl.pause_in:
        assert ctl.engine is not None
        ctl.engine.pause()  # the execution stops once this checkpoint has completed


def open_engine(target: str | None, names: list[str], versions: dict[str, str],
                ctl: Control) -> InstallEngine:
    engine = InstallEngine(target=target)
    for name in names:
        engine.register(name, step, version=versions.get(name))
    ctl.engine = engine
    ctl.observed.clear()
    engine.volatile["control"] = ctl
    return engine


def child_main(config: str) -> None:
    """Entry of a child engine that SIGKILLs itself inside checkpoint ``kill_in``."""
    c = json.loads(config)
    ctl = Control(kill_in=c["kill_in"])
    engine = open_engine(c["target"], c["names"], c["versions"], ctl)
    try:
        engine.execute(start_from=c["start_from"])
    except NotResumableError:
        engine.execute()  # a new session may refuse what the last one allowed: start over
    sys.exit(0)  # kill_in was not reached


def crash(engine: InstallEngine) -> None:
    """Abandon ``engine`` as a crash would: drop the flock without clearing its holder record,
    and close the log without recording the end of the session."""
    lock = engine._lock
    if lock is not None and lock._fd is not None:
        fd, lock._fd = lock._fd, None
        os.close(fd)
    engine.log.close()


def fs_files(target: DirectoryTarget, name: str) -> dict[str, str] | None:
    """The files a filesystem snapshot holds (what a rollback to it restores)."""
    return root_files(target.state_dir / "fs" / name)


class Resumability(RuleBasedStateMachine):
    checkpoints = Bundle("checkpoints")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="resumability-", dir=fast_tmp()))
        self.saved_env = os.environ.get("INSTALLENGINE_TMPDIR")
        os.environ["INSTALLENGINE_TMPDIR"] = str(self.tmp / "tmp")
        self.target = DirectoryTarget(self.tmp / "install")
        self.spec = f"dir:{self.target.root}"
        self.names: list[str] = []
        self.versions: dict[str, str] = {}
        self.ctl = Control()
        self.engine: InstallEngine | None = None
        self.generation = 0
        self.steps = 0

    # -- helpers ------------------------------------------------------------------------

    @property
    def e(self) -> InstallEngine:
        assert self.engine is not None
        return self.engine

    @property
    def attached(self) -> bool:
        return self.e.target is not None

    def reopen(self) -> None:
        self.ctl = Control()
        self.engine = open_engine(self.spec if self.target.state_dir.joinpath("log.db").exists()
                                  else None, self.names, self.versions, self.ctl)

    def snapshot_of_everything(self) -> tuple[Any, ...]:
        """What a refused execution must leave exactly as it was."""
        e = self.e
        return (e.cache.to_plain(), e.explain(), e.log.head, e.state,
                self.target.list_snapshots() if self.attached else None,
                root_files(self.target.root) if self.attached else None)

    def materialized(self, point: SnapshotPoint, *, files: bool = True) -> dict[str, Any]:
        rec = self.e._recorder
        state, tree = materialize(rec.log, read_lineage(rec.log), point.seq,
                                  rec.store if files else None)
        assert tree.hexdigest() == point.digest
        return state

    def execute(self, *, start_from: str | None, pause_before: str | None,
                fail: str | None, stop_on_error: bool,
                interrupt: tuple[str, str] | None = None) -> None:
        """Execute and check what the first checkpoint saw against what the rules promised."""
        e = self.e
        names = self.names
        decisions = e._decisions()
        done = e._view_done()
        begin = done if start_from is None else names.index(start_from)
        before = self.snapshot_of_everything()
        refused: type[Exception] | None = None
        if start_from is not None and not decisions[begin].verdict.resumable:
            refused = NotResumableError
        elif pause_before is not None and names.index(pause_before) <= begin:
            refused = UsageError
        expected_cache = e.cache.to_plain()
        expected_files = root_files(self.target.root) if self.attached else None
        if start_from is not None and refused is None:
            d = decisions[begin]
            continuation = e._recorder.touched and begin == done and d.not_started
            how = ("continuation" if continuation else "fresh" if d.point is None
                   else f"rollback to {d.point.label.split()[0 if d.point.when is When.BEFORE else -1]}")
            if d.point is not None and d.point.session != e.session.id:
                how += " of an earlier session"
            event(f"resume: {how}")
            if d.point is not None and not continuation:
                expected_cache = self.materialized(d.point)
                if d.point.fs_snapshot is not None and self.attached:
                    expected_files = fs_files(self.target, d.point.fs_snapshot)
        self.ctl.fail = {fail} if fail else set()
        self.ctl.cancel_in = interrupt[1] if interrupt and interrupt[0] == "cancel" else None
        self.ctl.pause_in = interrupt[1] if interrupt and interrupt[0] == "pause" else None
        self.ctl.observed.clear()
        e.stop_on_error = stop_on_error
        head = e.log.head[0]
        kind = "resume" if start_from is not None else "run"
        if refused is not None:
            event(f"{kind} refused: {refused.__name__}")
            with pytest.raises(refused) as err:
                e.execute(start_from=start_from, pause_before=pause_before)
            if refused is NotResumableError:
                assert err.value.reason == decisions[begin].verdict.reason  # type: ignore[attr-defined]
            assert self.snapshot_of_everything() == before
            return
        result = e.execute(start_from=start_from, pause_before=pause_before)
        ran = [o[0] for o in self.ctl.observed]
        if begin >= len(names):
            assert result.status is Status.SUCCESS
            assert ran == []
            return
        assert ran
        assert ran[0] == names[begin]
        first_name, seen_cache, seen_files = self.ctl.observed[0]
        assert seen_cache == expected_cache, "the state the resumed checkpoint saw"
        if expected_files is not None and seen_files is not None:
            assert seen_files == expected_files, "the files the resumed checkpoint saw"
        # The new before-point records exactly that state, and it rebuilds from the log.
        new_before = [p for p in e._recorder.lineage.points.values() if p.seq > head
                      and p.checkpoint == first_name and p.when is When.BEFORE]
        assert new_before
        assert new_before[0].digest == state_digest(seen_cache)
        assert self.materialized(new_before[0], files=False) == seen_cache
        self.check_outcome(result, begin, pause_before, fail, stop_on_error, interrupt)

    def check_outcome(self, result: Any, begin: int, pause_before: str | None,
                      fail: str | None, stop_on_error: bool,
                      interrupt: tuple[str, str] | None) -> None:
        """The status the plan calls for; after an attempt from the first checkpoint, exactly
        what it reached is resumable (everything it recorded is this session's)."""
        names = self.names
        end = names.index(pause_before) if pause_before else len(names)
        how, at = interrupt or (None, None)
        stopped_at = first_failure = None
        canceled = paused = False
        for index in range(begin, end):
            if names[index] == fail:  # the checkpoint raises before it looks at an interrupt
                first_failure = index if first_failure is None else first_failure
                if stop_on_error:
                    stopped_at = index
                    break
            elif names[index] == at and how == "cancel":
                stopped_at, canceled = index, True
                break
            elif names[index] == at and how == "pause":
                # completed, then stopped before the next one (if there is a next one)
                stopped_at, paused = min(index + 1, len(names) - 1), index + 1 < end
                break
        if canceled:
            assert result.status is Status.CANCELED, result
        elif first_failure is not None:
            assert (result.status, result.failed) == (Status.FAILED, [fail]), result
        else:
            expected = Status.PAUSED if pause_before or paused else Status.SUCCESS
            assert result.status is expected, result
        if begin != 0 or self.e._recorder.first_bad_seq is not None:
            return
        if first_failure is not None:
            reached = first_failure
        elif stopped_at is not None:
            reached = stopped_at
        else:
            reached = min(end, len(names) - 1)
        assert self.e.resumable() == names[: reached + 1], (self.e.explain(), result)

    # -- rules ----------------------------------------------------------------------------

    @initialize(target=checkpoints, names=st.lists(NAMES, min_size=1, max_size=4, unique=True),
                with_target=st.booleans(), files_often=st.booleans(), data=st.data())
    def open(self, names: list[str], with_target: bool, files_often: bool,
             data: st.DataObject) -> Any:
        if files_often:
            # Snapshot files normally wait for 256 KB of changes (see app_changes_the_cache);
            # here one is written at most points, so damaged files meet most resumes.
            recorder_module.MIN_FILE_INTERVAL = 0
        self.names = names
        self.ctl = Control()
        self.engine = open_engine(self.spec if with_target else None, names, {}, self.ctl)
        # Most interesting histories start with a run: often begin with one.
        if data.draw(st.booleans(), label="run first"):
            pause = data.draw(st.none() | st.sampled_from(names[1:] or [None]), label="pause")
            self.execute(start_from=None, pause_before=pause, fail=None, stop_on_error=True)
        return multiple(*names)

    @rule(pause_before=st.none() | checkpoints, fail=st.none() | checkpoints,
          interrupt=st.none() | st.tuples(st.sampled_from(["cancel", "pause"]), checkpoints),
          stop_on_error=st.booleans())
    def run(self, pause_before: str | None, fail: str | None,
            interrupt: tuple[str, str] | None, stop_on_error: bool) -> None:
        """A plain execute(); ``interrupt`` cancels or pauses from inside a checkpoint."""
        self.execute(start_from=None, pause_before=pause_before, fail=fail,
                     stop_on_error=stop_on_error, interrupt=interrupt)

    @rule(data=st.data(), name=checkpoints, pause_before=st.none() | checkpoints,
          fail=st.none() | checkpoints)
    def resume_from_any(self, data: st.DataObject, name: str, pause_before: str | None,
                        fail: str | None) -> None:
        """From any name: the rules must accept exactly the resumable ones."""
        self.execute(start_from=name, pause_before=pause_before, fail=fail,
                     stop_on_error=data.draw(st.booleans(), label="stop_on_error"))

    # Draws never depend on the engine's state (a pick is reduced modulo what is there), so
    # replaying an example draws the same values even where the state could differ.

    @rule(pick=st.integers(0, 7), pause_pick=st.none() | st.integers(0, 3),
          fail=st.none() | checkpoints, stop_on_error=st.booleans())
    def resume(self, pick: int, pause_pick: int | None, fail: str | None,
               stop_on_error: bool) -> None:
        """From a name resumable() offers, as an operator would."""
        resumable = self.e.resumable()
        name = resumable[pick % len(resumable)]
        later = self.names[self.names.index(name) + 1:]
        pause_before = later[pause_pick % len(later)] if later and pause_pick is not None \
            else None
        self.execute(start_from=name, pause_before=pause_before, fail=fail,
                     stop_on_error=stop_on_error)

    @rule()
    def run_to_the_end(self) -> None:
        self.execute(start_from=None, pause_before=None, fail=None,
                     stop_on_error=True)

    @rule(pick=st.integers(0, 7))
    def resume_to_the_end(self, pick: int) -> None:
        resumable = self.e.resumable()
        name = resumable[pick % len(resumable)]
        self.execute(start_from=name, pause_before=None, fail=None,
                     stop_on_error=True)

    @rule(key=st.sampled_from(["app", "trail", "a", "blob"]),
          value=st.none() | st.integers(0, 9) | st.lists(st.integers(0, 9), max_size=3)
          | st.sampled_from("xyz").map(lambda c: c * 300_000))
    def app_changes_the_cache(self, key: str, value: Any) -> None:
        # 300 KB values pass the threshold, so the next point also writes a snapshot file.
        self.e.cache[key] = value

    @rule(kill=st.booleans())
    def restart(self, kill: bool) -> None:
        if kill:
            crash(self.e)
        else:
            self.e.close()
        self.reopen()

    @precondition(lambda self: self.engine is not None and self.attached)
    @rule(pick=st.integers(0, 3))
    def child_killed_mid_checkpoint(self, pick: int) -> None:
        """A child engine resumes like ``run --resume`` and is SIGKILLed inside a checkpoint."""
        resumable = self.e.resumable()
        start_from = resumable[-1] if resumable else None
        later = self.names[self.names.index(start_from):] if start_from else self.names
        kill_in = later[pick % len(later)]
        if CHILD_CRASHES["left"] <= 0:
            # Children cost a second each: past the budget, crash in-process instead
            # (decided here, not in a precondition, so that generation stays deterministic).
            self.restart(kill=True)
            return
        CHILD_CRASHES["left"] -= 1
        event("a child engine was SIGKILLed mid-checkpoint")
        self.e.close()
        config = json.dumps({"target": self.spec, "names": self.names,
                             "versions": self.versions, "start_from": start_from,
                             "kill_in": kill_in})
        child = subprocess.run(
            [sys.executable, "-c",
             f"from tests.stateful.test_resumability import child_main; child_main({config!r})"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
            text=True, timeout=120, check=False)
        assert child.returncode == -signal.SIGKILL, child.stderr
        self.reopen()
        events = list(self.e.log.query(kind=EventKind.LOCK_TAKEN_OVER))
        assert events, "the next engine notes that it took over from a crashed one"

    @precondition(lambda self: self.engine is not None and not self.attached)
    @rule(inside=st.none() | checkpoints)
    def attach(self, inside: str | None) -> None:
        if inside is None:
            self.target.root.mkdir(parents=True, exist_ok=True)
            self.e.attach_target(self.spec)
        else:
            self.ctl.attach = (inside, self.spec)  # the checkpoint that creates the target

    @rule(name=checkpoints, when=st.sampled_from(list(When)),
          how=st.sampled_from(["delete-file", "corrupt-file", "replace-file",
                               "destroy-fs-snapshot"]))
    def damage(self, name: str, when: When, how: str) -> None:
        rec = self.e._recorder
        if how == "destroy-fs-snapshot":
            if self.attached:
                self.target.destroy_snapshot(
                    f".step_{name}.{'before' if when is When.BEFORE else 'done'}")
            return
        # Snapshot files, durable on the target or volatile in the temporary area.
        for f in rec.store.files():
            point = rec.lineage.points.get(f.seq)
            if point is None or point.checkpoint != name or point.when is not when:
                continue
            if how == "delete-file":
                f.path.unlink()
            elif how == "corrupt-file":
                f.path.write_bytes(f.path.read_bytes()[: f.size // 2] + b"[]")
            else:  # valid JSON of another state: only the digest can tell
                f.path.write_bytes(b'{"planted": true}')

    @rule(name=checkpoints)
    def change_registration(self, name: str) -> None:
        self.generation += 1
        self.versions[name] = f"v{self.generation}"
        self.e.close()
        self.reopen()

    @rule(target=checkpoints, how=st.sampled_from(["insert", "move"]), at=st.integers(0, 7),
          new=NAMES)
    def register_a_different_list(self, how: str, at: int, new: str) -> Any:
        """Restart with another checkpoint list: one inserted, or one moved a place later.

        Names are never removed, so every name the bundle holds stays registered.
        """
        names = list(self.names)
        if how == "insert" and new not in names:
            names.insert(at % (len(names) + 1), new)
        elif how == "move" and len(names) > 1:
            i = at % (len(names) - 1)
            names[i], names[i + 1] = names[i + 1], names[i]
        else:
            return multiple()
        event(f"registration: {how}")
        self.names = names
        self.e.close()
        self.reopen()
        return multiple(new) if how == "insert" else multiple()

    @rule()
    def cleanup(self) -> None:
        self.e.cleanup()
        assert self.e.resumable() == self.names[:1]

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def resumable_points_are_available(self) -> None:
        if self.engine is None:
            return
        e = self.e
        rec = e._recorder
        fs = rec.fs_snapshots()
        listed = {(s.name, s.id) for s in fs} if fs is not None else None
        lineage = read_lineage(e.log)
        for index, d in enumerate(e._decisions()):
            if not d.verdict.resumable:
                continue
            if d.point is None:
                assert index == 0, "only the first checkpoint resumes without a before-point"
                continue
            point = d.point
            ev = e.log.get(point.seq)
            assert ev is not None
            assert ev.kind == EventKind.SNAPSHOT_TAKEN
            assert ev.data["digest"] == point.digest
            if point.session != e.session.id:
                assert point.durable, f"{d.verdict.name}: an earlier session's point is volatile"
            # It materializes from the files and from the log alone, matching its digest.
            self.materialized(point)
            self.materialized(point, files=False)
            # Every checkpoint registered before X completed, as registered now, in the
            # lineage of the state a resume would restore.
            done = {(p.checkpoint, p.fingerprint) for p in lineage.chain(point.seq)
                    if p.when is When.COMPLETED}
            regs = e._registered()
            for reg in regs[:index]:
                assert (reg.name, reg.fingerprint) in done, (d, reg)
            if listed is not None and point.fs_snapshot is not None:
                assert (point.fs_snapshot, point.fs_id) in listed, d

    @invariant()
    def explain_agrees_with_resumable(self) -> None:
        if self.engine is None:
            return
        verdicts = self.e.explain()
        assert [v.name for v in verdicts] == self.names
        assert [v.name for v in verdicts if v.resumable] == self.e.resumable()
        assert verdicts[0].resumable, "the first checkpoint is always resumable"
        for v in verdicts:
            assert (v.reason is None) == v.resumable
            assert v.reason is None or "\n" not in v.reason

    @invariant()
    def log_verifies_and_cache_digest_is_current(self) -> None:
        if self.engine is None:
            return
        self.steps += 1
        assert self.e.log.verify().ok
        assert self.e._recorder.cache.digest() == state_digest(self.e.cache.to_plain())

    def teardown(self) -> None:
        event(f"steps after opening: {self.steps - 1}")
        recorder_module.MIN_FILE_INTERVAL = DEFAULT_FILE_INTERVAL
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self.saved_env is None:
                os.environ.pop("INSTALLENGINE_TMPDIR", None)
            else:
                os.environ["INSTALLENGINE_TMPDIR"] = self.saved_env
            shutil.rmtree(self.tmp, ignore_errors=True)


Resumability.TestCase.settings = settings(
    max_examples=300 * SCALE, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestResumability = Resumability.TestCase


def test_a_child_engine_killed_mid_checkpoint_leaves_a_resumable_install(tmp_path):
    """The crash path on its own, once, whatever the search above draws."""
    spec = f"dir:{tmp_path / 'install'}"
    names = ["a", "b", "c"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "INSTALLENGINE_TMPDIR": str(tmp_path / "t")}
    config = json.dumps({"target": spec, "names": names, "versions": {}, "start_from": None,
                         "kill_in": "b"})
    child = subprocess.run(
        [sys.executable, "-c",
         f"from tests.stateful.test_resumability import child_main; child_main({config!r})"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    ctl = Control()
    engine = open_engine(spec, names, {}, ctl)
    try:
        assert engine.resumable() == ["a", "b"]
        rec = engine._recorder
        before_b = next(d.point for d in engine._decisions() if d.verdict.name == "b")
        assert before_b is not None
        state, _ = materialize(rec.log, read_lineage(rec.log), before_b.seq, rec.store)
        assert engine.execute(start_from="b").status is Status.SUCCESS
        assert ctl.observed[0][1] == state  # b's half-done changes were rolled back
        assert ctl.observed[0][2] == {"a.txt": "1"}
        assert engine.resumable() == names
    finally:
        engine.close()
    with EventLog.open(tmp_path / "install" / ".installengine" / "log.db", readonly=True) as log:
        assert log.verify().ok
