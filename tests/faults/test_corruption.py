"""Damaged snapshot files, logs, WALs and filesystem snapshots.

Each time: ``EventLog.verify()`` (and ``installengine verify``) names the
problem; what the damage touched is not offered, or is rebuilt from the log
(snapshot files are only caches); every checkpoint still offered resumes to
the state it had before the damage; and nothing but a documented
``EngineError`` comes out of the engine, nor a traceback out of the CLI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventLog
from installengine.snapshots import DirectoryTarget, materialize
from installengine.statemachine import EngineError, InstallEngine, Status

from .harness import (
    Child,
    Reference,
    Stats,
    Tree,
    _check_offer,
    finish_trial,
    tree,
)
from .steps import NAMES, register_plan

#: a small plan whose checkpoints are idempotent, so even a fresh attempt ends equal
SMALL: list[tuple[str, str, list[Any]]] = [
    ("a", "touch", ["a.txt", "a"]),
    ("b", "grow", ["b", 300_000]),
    ("c", "put", ["c", [3, {"three": 3}]]),
    ("d", "grow", ["d", 400_000]),
    ("e", "touch", ["etc/e.txt", "e"]),
]
SMALL_NAMES = [name for name, _, _ in SMALL]


@dataclass
class Installed:
    """A finished install of SMALL and what it recorded, to compare damaged copies with."""

    root: Path
    states: dict[int, dict[str, Any]]
    final: dict[str, Any]
    files: Tree
    #: checkpoint -> the filesystem snapshot of the point a resume from it rolls back to
    resume_fs: dict[str, str | None]

    @property
    def spec(self) -> str:
        return f"dir:{self.root}"

    def copy(self, where: Path) -> Installed:
        """The same install moved to ``where`` (the whole state moves with the directory)."""
        shutil.copytree(self.root, where, symlinks=True)
        return Installed(where, self.states, self.final, self.files, self.resume_fs)

    @property
    def state_dir(self) -> Path:
        return self.root / ".installengine"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "log.db"


def reopen(spec: str) -> InstallEngine:
    engine = InstallEngine(spec)
    try:
        register_plan(engine, SMALL)
    except BaseException:
        engine.close()
        raise
    return engine


def install(root: Path) -> Installed:
    with InstallEngine(f"dir:{root}") as engine:
        register_plan(engine, SMALL)
        assert engine.execute().status is Status.SUCCESS
        final = engine.cache.to_plain()
        rec = engine._recorder
        states = {p.seq: materialize(engine.log, rec.lineage, p.seq, None)[0]
                  for p in rec.lineage.chain()}
        resume_fs = {d.verdict.name: d.point.fs_snapshot if d.point else None
                     for d in rec.decide(engine._registered())}
        assert len(rec.store.files()) >= 2, "the plan should leave snapshot files"
    return Installed(root, states, final, tree(root), resume_fs)


@pytest.fixture(scope="module")
def installed_once(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install(tmp_path_factory.mktemp("corruption") / "pristine")


@pytest.fixture
def pristine(installed_once: Installed, scratch: Path) -> Installed:
    """A private copy of the finished install, on tmpfs where there is one."""
    return installed_once.copy(scratch / "install")


def assert_one_line(err: BaseException) -> None:
    assert isinstance(err, EngineError), f"{type(err).__name__} escaped: {err}"
    assert str(err), "an error without a message"
    assert "\n" not in str(err), repr(str(err))


def assert_offers_safe(engine: InstallEngine, states: dict[int, dict[str, Any]]) -> list[str]:
    """Every offered checkpoint rolls back to a durable point that rebuilds the recorded state."""
    rec = engine._recorder
    offered = []
    target = engine.target
    snaps = {(s.name, s.id) for s in target.list_snapshots()} if target else set()
    for index, decision in enumerate(rec.decide(engine._registered())):
        verdict = decision.verdict
        if not verdict.resumable:
            assert verdict.reason
            assert "\n" not in verdict.reason
            continue
        offered.append(verdict.name)
        point = decision.point
        if point is None:
            assert index == 0, f"{verdict.name} offered without a point"
            continue
        assert point.durable
        state, _ = materialize(engine.log, rec.lineage, point.seq, rec.store)
        assert state == states[point.seq], f"{verdict.name}: {point.label} rebuilds another state"
        if point.fs_snapshot is not None:
            assert (point.fs_snapshot, point.fs_id) in snaps
    assert offered == engine.resumable()
    return offered


def resume_to_the_end(engine: InstallEngine, inst: Installed) -> None:
    """Resume from the last offered checkpoint: the install ends as it did before the damage."""
    start = engine.resumable()[-1]
    result = engine.execute(start_from=start)
    assert result.status is Status.SUCCESS, result.errors
    assert engine.cache.to_plain() == inst.final
    assert tree(inst.root) == inst.files


#: the console script of the environment the tests run in (never one found elsewhere on PATH)
INSTALLENGINE = str(Path(sys.executable).with_name("installengine"))


def cli_verify(spec: str) -> tuple[int, dict[str, Any] | None]:
    """``installengine verify --target spec --json``: its exit code and parsed output."""
    done = subprocess.run([INSTALLENGINE, "verify", "--target", spec, "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode not in (0, 1):
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("Error: "), done.stderr
        return done.returncode, None
    return done.returncode, json.loads(done.stdout)


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def raw_rows(db: Path) -> list[tuple[Any, ...]] | None:
    """Every events row as SQLite returns it, or None when the file cannot be read."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.text_factory = bytes
        try:
            return con.execute("SELECT * FROM events ORDER BY seq").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


# -- snapshot files ------------------------------------------------------------------------------


def _damage_file(path: Path, how: str, spare: Path) -> None:
    data = path.read_bytes()
    if how == "flip":
        flip(path, len(data) // 2, 0x01)
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()
    elif how == "symlink":
        # even a link to the right bytes is refused: the store never follows links
        copy = spare / path.name
        copy.write_bytes(data)
        path.unlink()
        path.symlink_to(copy)
    elif how == "directory":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "symlink", "directory"])
def test_a_damaged_snapshot_file_is_named_and_rebuilt_from_the_log(
        pristine: Installed, tmp_path: Path, how: str) -> None:
    files = sorted((pristine.state_dir / "snapshots").glob("0*.json"))
    spare = tmp_path / "spare"
    spare.mkdir()
    for f in files:
        _damage_file(f, how, spare)

    code, report = cli_verify(pristine.spec)
    if report is not None:
        damaged = {Path(s["file"]).name: s for s in report["snapshots"]}
        if how == "delete":
            assert code == 0
            assert report["ok"]
        else:
            assert code == 1
            assert not report["ok"]
            for f in files:
                assert damaged[f.name]["ok"] is False
                assert damaged[f.name]["rebuildable"] is True

    with reopen(pristine.spec) as engine:
        assert engine.log.verify().ok
        named = {Path(p).name: (ok, rebuildable)
                 for p, ok, rebuildable in engine._recorder.verify_files()}
        for f in files:
            if how == "delete":
                assert f.name not in named
            else:
                assert named[f.name] == (False, True)
        assert assert_offers_safe(engine, pristine.states) == SMALL_NAMES
        # before c is b's completed point: the first damaged file's
        result = engine.execute(start_from="c")
        assert result.status is Status.SUCCESS
        assert engine.cache.to_plain() == pristine.final
    if how == "symlink":
        for f in files:
            assert (spare / f.name).read_bytes() != b"", "the link's target was never written"


# -- the log database --------------------------------------------------------------------------------


def _probe(inst: Installed, *, rows_changed: bool) -> str:
    """Open a damaged copy as an audit and as an engine; return what happened, in one word."""
    try:
        with EventLog.open(inst.log_path, readonly=True) as log:
            report = log.verify()
        assert report.reason is None or "\n" not in report.reason
        if rows_changed:
            assert not report.ok, "verify missed a changed event"
    except EngineError as err:
        assert_one_line(err)
    try:
        engine = reopen(inst.spec)
    except EngineError as err:
        assert_one_line(err)
        return "refused to open"
    with engine:
        assert_offers_safe(engine, inst.states)
        try:
            resume_to_the_end(engine, inst)
        except EngineError as err:
            assert_one_line(err)
            return "resume refused"
    return "resumed"


def test_flipped_bytes_in_a_closed_log_are_named_and_never_resumed_from(
        pristine: Installed, scratch: Path) -> None:
    pristine_rows = raw_rows(pristine.log_path)
    size = pristine.log_path.stat().st_size
    rng = random.Random(20240611)
    # the header fields (page size, counters, schema cookie), then anywhere
    offsets = [16, 18, 28, 44, 56, 96, *rng.sample(range(100, size), 24)]
    outcomes: dict[str, int] = {}
    for i, offset in enumerate(offsets):
        inst = pristine.copy(scratch / f"copy-{i}")
        flip(inst.log_path, offset, 1 << rng.randrange(8))
        changed = raw_rows(inst.log_path) != pristine_rows
        if i % 10 == 0:  # the command line too: a named mismatch or a one-line error
            code, _ = cli_verify(inst.spec)
            assert code != 0 or not changed
        outcome = _probe(inst, rows_changed=changed)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        shutil.rmtree(inst.root)
    print(f"flipped {len(offsets)} bytes: {outcomes}")


@pytest.mark.parametrize("keep", ["nothing", "50 bytes", "one page", "half", "all but one byte"])
def test_a_truncated_log_is_refused_or_named(pristine: Installed, keep: str) -> None:
    size = pristine.log_path.stat().st_size
    length = {"nothing": 0, "50 bytes": 50, "one page": 4096, "half": size // 2,
              "all but one byte": size - 1}[keep]
    rows = raw_rows(pristine.log_path)
    with pristine.log_path.open("r+b") as f:
        f.truncate(length)
    if length == 0:
        # An empty file is what a crash while creating the log leaves: it is a new log.
        # The snapshot files of the lost history are then strays that no point names.
        code, report = cli_verify(pristine.spec)
        if report is not None:
            assert code == 1
            assert report["snapshots"]
            assert all(not s["ok"] and not s["rebuildable"] for s in report["snapshots"])
    outcome = _probe(pristine, rows_changed=length > 0 and raw_rows(pristine.log_path) != rows)
    assert outcome == "resumed" or length > 0


def test_a_deleted_log_starts_a_new_history_that_never_uses_the_old_files(
        pristine: Installed) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{pristine.log_path}{suffix}").unlink(missing_ok=True)
    with reopen(pristine.spec) as engine:
        assert engine.log.verify().ok
        assert assert_offers_safe(engine, pristine.states) == ["a"]
        assert all(not ok and not rebuildable
                   for _, ok, rebuildable in engine._recorder.verify_files())
        resume_to_the_end(engine, pristine)


def test_flipped_bytes_under_an_open_reader_raise_only_engine_errors(
        pristine: Installed) -> None:
    reader = EventLog.open(pristine.log_path, readonly=True)
    try:
        assert reader.verify().ok
        con = sqlite3.connect(pristine.log_path)
        leaves = [p for p, kind in con.execute(
            "SELECT pageno, pagetype FROM dbstat WHERE name = 'events'") if kind == "leaf"]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        for page in leaves[:6]:
            flip(pristine.log_path, (page - 1) * page_size + page_size - 40)
        for action in (reader.verify, lambda: list(reader.query()), lambda: reader.get(3)):
            try:
                action()
            except EngineError as err:
                assert_one_line(err)
        try:
            engine = reopen(pristine.spec)
        except EngineError as err:
            assert_one_line(err)
        else:
            with engine:
                assert not engine.log.verify().ok
                assert_offers_safe(engine, pristine.states)
    finally:
        reader.close()


def test_a_damaged_index_is_named_by_verify(pristine: Installed) -> None:
    con = sqlite3.connect(pristine.log_path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events_by_kind'"
                       ).fetchone()[0]
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    original = pristine.log_path.read_bytes()
    rng = random.Random(7)
    for _ in range(200):
        pristine.log_path.write_bytes(original)
        flip(pristine.log_path, (root - 1) * page_size + rng.randrange(100, page_size))
        try:
            with EventLog.open(pristine.log_path, readonly=True) as log:
                report = log.verify()
                by_scan = [e.seq for e in log.query() if e.kind == "snapshot-taken"]
                by_kind = [e.seq for e in log.query(kind="snapshot-taken")]
        except EngineError:
            continue
        if by_scan != by_kind:
            assert not report.ok, f"verify says ok, but query(kind=) returns {by_kind} of {by_scan}"
            assert report.first_bad_seq is None
            assert "damaged outside the events' rows" in report.reason
            assert report.reason.endswith(f"sqlite3 {pristine.log_path} REINDEX")
            code, _ = cli_verify(pristine.spec)
            assert code == 1
            return
    pytest.skip("no flip in the index page changed a query")


# -- the WAL of a killed writer -------------------------------------------------------------------------


def _killed_mid_install(workdir: Path, completions: int) -> tuple[str, list[str]]:
    """Run the crash plan in a child and SIGKILL it after ``completions``: its WAL stays."""
    spec = f"dir:{workdir / 'target'}"
    child = Child.start(spec, "run", seed=1, jitter_ms=0.0, workdir=workdir)
    seen = 0
    while (line := child.next_line()) is not None:
        if line.startswith("completed "):
            seen += 1
            if seen == completions:
                break
    assert child.kill(), "the child ended before it could be killed"
    child.finish()
    return spec, child.reported


def _damage_wal(wal: Path, how: str) -> None:
    size = wal.stat().st_size
    if how == "delete":
        wal.unlink()
        Path(str(wal).removesuffix("-wal") + "-shm").unlink(missing_ok=True)
    elif how == "truncate":
        with wal.open("r+b") as f:
            f.truncate(size // 2)
    elif how == "flip-frame":
        flip(wal, size * 2 // 3)
    elif how == "flip-header":
        flip(wal, 20)  # the second salt: no frame matches the header any more
    elif how == "zero-tail":
        with wal.open("r+b") as f:
            f.seek(size - 4096)
            f.write(bytes(4096))


@pytest.mark.parametrize("how", ["delete", "truncate", "flip-frame", "flip-header", "zero-tail"])
def test_a_damaged_wal_falls_back_to_an_earlier_commit_and_stays_safe(
        scratch: Path, crash_reference: Reference, how: str) -> None:
    spec, reported = _killed_mid_install(scratch / how, completions=12)
    state_dir = DirectoryTarget(scratch / how / "target").state_dir
    wal = state_dir / "log.db-wal"
    assert wal.stat().st_size > 32, "the killed writer left no WAL to damage"
    _damage_wal(wal, how)

    stats = Stats()
    with InstallEngine(spec) as engine:
        register_plan(engine)
        assert engine.log.verify().ok
        done = [p.checkpoint for p in engine._recorder.lineage.completed()]
        assert done == NAMES[: len(done)]
        assert len(done) <= len(reported) + 1
        history_left = bool(engine._recorder.lineage.points)
        decisions = engine._recorder.decide(engine._registered())
        for index, decision in enumerate(decisions):
            if decision.verdict.resumable:
                _check_offer(engine, index, decision, crash_reference, stats, how)
        offered = engine.resumable()
    assert stats.problems == []
    print(f"WAL {how}: {len(done)} of {len(reported)} reported completions left, offered "
          f"{len(offered)}")
    if not history_left:
        # Nothing of the log was ever checkpointed out of the WAL, so the damage took the
        # whole history with it: what is left is a new log, which offers a fresh start only.
        assert offered == NAMES[:1]
        return
    finish_trial(spec, crash_reference, stats, how)
    assert stats.problems == []
    assert stats.runs_equal == 1


def test_a_wal_damaged_under_an_open_reader_raises_only_engine_errors(
        scratch: Path, crash_reference: Reference) -> None:
    spec, _ = _killed_mid_install(scratch, completions=8)
    state_dir = DirectoryTarget(scratch / "target").state_dir
    reader = EventLog.open(state_dir / "log.db", readonly=True)
    try:
        before = reader.verify()
        assert before.ok
        wal = state_dir / "log.db-wal"
        flip(wal, wal.stat().st_size - 100)
        for action in (reader.verify, lambda: list(reader.query(kind="snapshot-taken")),
                       lambda: reader.get(before.events)):
            try:
                action()
            except EngineError as err:
                assert_one_line(err)
    finally:
        reader.close()
    stats = Stats()
    try:
        finish_trial(spec, crash_reference, stats, "wal under a reader")
    except EngineError as err:
        assert_one_line(err)
    assert stats.unsafe == []
    assert stats.lost == []


# -- filesystem snapshots -----------------------------------------------------------------------------


def _destroy(inst: Installed, name: str, how: str) -> None:
    target = DirectoryTarget(inst.root)
    path = target.state_dir / "fs" / name
    if how == "destroy_snapshot":
        target.destroy_snapshot(name)
    elif how == "rmtree":
        shutil.rmtree(path)
    elif how == "id-file":
        (path / "..installengine-id").unlink()
    assert name not in {s.name for s in target.list_snapshots()}


def test_destroyed_filesystem_snapshots_are_not_offered(pristine: Installed,
                                                        scratch: Path) -> None:
    names = sorted(n for n in os.listdir(pristine.state_dir / "fs") if not n.startswith(".tmp-"))
    with reopen(pristine.spec) as engine:
        recorded = {p.fs_snapshot for p in engine._recorder.lineage.chain()}
    assert set(names) == recorded
    ways = ["destroy_snapshot", "rmtree", "id-file"]
    for i, name in enumerate(names[::2]):
        inst = pristine.copy(scratch / f"copy-{i}")
        _destroy(inst, name, ways[i % len(ways)])
        with reopen(inst.spec) as engine:
            verdicts = {v.name: v for v in engine.explain()}
            for checkpoint, fs_name in inst.resume_fs.items():
                if fs_name == name and checkpoint != SMALL_NAMES[0]:
                    assert not verdicts[checkpoint].resumable
                    assert "filesystem snapshot" in (verdicts[checkpoint].reason or "")
            assert_offers_safe(engine, inst.states)
            resume_to_the_end(engine, inst)
        shutil.rmtree(inst.root)
