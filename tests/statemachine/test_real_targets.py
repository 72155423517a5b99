"""The original engine's scenarios through InstallEngine on a real ZFS dataset and a real btrfs subvolume.

Every test runs on both (markers ``zfs`` and ``btrfs``; datasets and subvolumes
come from the fixtures in tests/conftest.py). Checkpoints write ``<name>.txt``
into the target's root and note it in the persistent cache; the test checks the
filesystem snapshots both through the target and with the real tool.

Filesystem snapshot names (see tests/snapshots/test_rules.py): one run of a, b,
c, d takes ``.step_a.before`` and then ``.step_X.done`` for each checkpoint X,
which "before <next>" shares with "X completed". So "the snapshot of checkpoint
X" in the original engine's scenarios is ``.step_X.done``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from installengine.eventlog import EventKind, EventLog
from installengine.snapshots import BtrfsTarget, FsSnapshot
from installengine.statemachine import Context, InstallEngine, NotResumableError, Status
from installengine.statemachine.cli import cli

ABCD = ["a", "b", "c", "d"]
#: the filesystem snapshots of one whole run of a, b, c, d, oldest first
FULL_RUN = [".step_a.before", ".step_a.done", ".step_b.done", ".step_c.done", ".step_d.done"]
TOOL_TIMEOUT = 60.0
STATE_DIR_NAME = ".installengine"


# -- checkpoints ----------------------------------------------------------------------------------


def installed_files(root: Path) -> dict[str, str]:
    """The install's files under ``root`` (the state directory left out): path -> content."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and STATE_DIR_NAME not in p.relative_to(root).parts}


def install_file(ctx: Context) -> None:
    """Write ``<name>.txt`` into the target's root (when there is one) and note it in the cache.

    Notes in ``volatile['seen']`` what it started from: files, persistent cache and the
    target's filesystem snapshots. The file's content carries ``volatile['label']``, so
    the test can tell which run wrote it (the volatile cache is not in the fingerprint).
    """
    label = ctx.volatile.get("label", "first")
    seen: dict[str, Any] = {"name": ctx.name, "cache": ctx.cache.to_plain()}
    if ctx.target is not None:
        root = ctx.target.root
        seen["files"] = installed_files(root)
        seen["snapshots"] = [s.name for s in ctx.target.list_snapshots()]
        (root / f"{ctx.name}.txt").write_text(f"{ctx.name} {label}")
    ctx.volatile.setdefault("seen", []).append(seen)
    ctx.cache[ctx.name] = f"{ctx.name}.txt"
    ctx.cache.setdefault("items", []).append(ctx.name)


def create_and_attach(ctx: Context, spec: str) -> None:
    """The checkpoint that creates the install target with the real tool, attaches it, then installs."""
    scheme, _, where = spec.partition(":")
    tool = {"zfs": ["zfs", "create", where], "btrfs": ["btrfs", "subvolume", "create", where]}[scheme]
    subprocess.run(tool, check=True, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    ctx.attach_target(spec)
    install_file(ctx)


def register(engine: InstallEngine, attach_spec: str | None = None) -> None:
    """a, b, c, d; with ``attach_spec``, c creates and attaches the target first."""
    for name in ABCD:
        if name == "c" and attach_spec is not None:
            engine.register(name, create_and_attach, args=[attach_spec])
        else:
            engine.register(name, install_file)


def seen_by(engine: InstallEngine) -> dict[str, dict[str, Any]]:
    """What each checkpoint of the latest execution started from (see install_file)."""
    return {s["name"]: s for s in engine.volatile.get("seen", [])}


# -- the real targets -------------------------------------------------------------------------------

_BTRFS_LIST = re.compile(r"^ID (\d+) .*\buuid (\S+) path (.+)$")


def _tool(*command: str) -> str:
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    return done.stdout


@dataclass(frozen=True)
class RealTarget:
    """A fresh ZFS dataset or btrfs subvolume, seen through its own tool rather than the target."""

    kind: str
    #: the dataset name, or the subvolume's path
    where: str

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.where}"

    def child(self, name: str) -> RealTarget:
        """A target not created yet, inside this one (so the fixture removes it too)."""
        return RealTarget(self.kind, f"{self.where}/{name}")

    def _snapshot_dir(self) -> Path:
        return BtrfsTarget(self.where).snapshot_dir

    def tool_snapshots(self) -> list[FsSnapshot]:
        """The installengine snapshots as ``zfs list``/``btrfs subvolume list`` show them, oldest first."""
        if self.kind == "zfs":
            listed = _tool("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-s", "createtxg",
                           "-r", self.where)
            full = [n for n in listed.split() if n.startswith(f"{self.where}@.step_")]
            if not full:
                return []
            guids = _tool("zfs", "get", "-H", "-p", "-o", "name,value", "guid", *full)
            ids = dict(line.split("\t") for line in guids.splitlines())
            return [FsSnapshot(n.partition("@")[2], ids[n]) for n in full]
        mount = Path(os.environ["INSTALLENGINE_TEST_BTRFS"])
        below = f"{self._snapshot_dir().relative_to(mount).as_posix()}/"
        found = []
        for line in _tool("btrfs", "subvolume", "list", "-r", "-u", str(mount)).splitlines():
            match = _BTRFS_LIST.match(line.strip())
            assert match is not None, f"unexpected btrfs subvolume list line {line!r}"
            subvolume_id, uuid, path = match.groups()
            if path.startswith(below) and path[len(below):].startswith(".step_"):
                found.append((int(subvolume_id), FsSnapshot(path[len(below):], uuid)))
        return [snap for _, snap in sorted(found, key=lambda pair: pair[0])]

    def destroy_by_hand(self, name: str) -> None:
        """Destroy filesystem snapshot ``name`` with the real tool, as an operator would."""
        if self.kind == "zfs":
            _tool("zfs", "destroy", f"{self.where}@{name}")
        else:
            _tool("btrfs", "subvolume", "delete", str(self._snapshot_dir() / name))

    def state_dir_is_apart(self, state_dir: Path) -> bool:
        """Whether ``state_dir`` is its own child dataset or nested subvolume, out of the snapshots."""
        if self.kind == "zfs":
            mountpoint = _tool("zfs", "get", "-H", "-o", "value", "mountpoint",
                               f"{self.where}/{STATE_DIR_NAME}").strip()
            return Path(mountpoint) == state_dir
        return state_dir.lstat().st_ino == 256  # the top directory of every btrfs subvolume


@pytest.fixture(params=[pytest.param("zfs", marks=pytest.mark.zfs),
                        pytest.param("btrfs", marks=pytest.mark.btrfs)])
def real(request: pytest.FixtureRequest) -> Iterator[RealTarget]:
    """A fresh dataset or subvolume from the suite's fixtures (removed after, with its snapshots)."""
    if request.param == "zfs":
        yield RealTarget("zfs", request.getfixturevalue("zfs_dataset"))
    else:
        yield RealTarget("btrfs", str(request.getfixturevalue("btrfs_subvolume")))


@pytest.fixture
def engine_on(real: RealTarget,
              open_engine: Callable[..., InstallEngine]) -> Callable[..., InstallEngine]:
    """Open an engine on ``real`` (or another spec) and register a, b, c, d; closed before the target goes."""
    def make(spec: str | None = None, attach_spec: str | None = None) -> InstallEngine:
        engine = open_engine(spec or real.spec)
        register(engine, attach_spec)
        return engine
    return make


def snapshot_points(engine: InstallEngine, session: str | None = None) -> list[tuple[str, str, str | None]]:
    """(label, fs_snapshot, fs_id) of every snapshot point, in log order."""
    return [(f"{ev.data['point']} {ev.checkpoint}", ev.data["fs_snapshot"], ev.data["fs_id"])
            for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN, session=session)]


# -- 1. snapshots created, and overwritten by a second run ---------------------------------------------


def test_a_run_takes_the_engines_filesystem_snapshots_and_a_second_run_overwrites_them(
        real: RealTarget, engine_on: Callable[..., InstallEngine]) -> None:
    first = engine_on()
    assert first.execute().status is Status.SUCCESS
    assert first.target is not None
    snaps = first.target.list_snapshots()
    assert [s.name for s in snaps] == FULL_RUN
    assert real.tool_snapshots() == snaps
    # every point names the snapshot taken with it, by name and id
    assert snapshot_points(first, first.session.id) == [
        ("before a", ".step_a.before", snaps[0].id), ("completed a", ".step_a.done", snaps[1].id),
        ("before b", ".step_a.done", snaps[1].id), ("completed b", ".step_b.done", snaps[2].id),
        ("before c", ".step_b.done", snaps[2].id), ("completed c", ".step_c.done", snaps[3].id),
        ("before d", ".step_c.done", snaps[3].id), ("completed d", ".step_d.done", snaps[4].id)]
    first.close()

    # after a restart a plain execute is a fresh attempt: it runs everything again over the
    # target as it is, and each snapshot point takes its snapshot again under the same name
    second = engine_on()
    second.volatile["label"] = "second"
    assert second.execute().status is Status.SUCCESS
    assert list(second.log.query(kind=EventKind.ROLLED_BACK)) == []
    assert second.target is not None
    again = second.target.list_snapshots()
    assert [s.name for s in again] == FULL_RUN
    assert {s.id for s in again}.isdisjoint({s.id for s in snaps})
    assert real.tool_snapshots() == again
    assert [(p[1], p[2]) for p in snapshot_points(second, second.session.id)] == [
        (again[i].name, again[i].id) for i in (0, 1, 1, 2, 2, 3, 3, 4)]
    assert installed_files(second.target.root) == {f"{n}.txt": f"{n} second" for n in ABCD}
    # the snapshots of the superseded run are gone, and that costs no resumability
    assert second.resumable() == ABCD
    second.close()
    third = engine_on()
    assert [(v.name, v.resumable, v.reason) for v in third.explain()] == [
        (n, True, None) for n in ABCD]
    assert third.log.verify().ok


def test_resuming_the_first_checkpoint_takes_every_snapshot_again_under_its_name(
        real: RealTarget, engine_on: Callable[..., InstallEngine]) -> None:
    engine = engine_on()
    engine.execute()
    assert engine.target is not None
    snaps = engine.target.list_snapshots()
    engine.volatile.update(label="second", seen=[])
    assert engine.execute(start_from="a").status is Status.SUCCESS
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before a"
    assert rolled.data["destroyed_fs_snapshots"] == FULL_RUN[1:]
    # a started over the empty dataset/subvolume it started over the first time
    assert seen_by(engine)["a"]["files"] == {}
    assert seen_by(engine)["a"]["cache"] == {}
    again = engine.target.list_snapshots()
    assert [s.name for s in again] == FULL_RUN
    assert {s.id for s in again}.isdisjoint({s.id for s in snaps})
    assert real.tool_snapshots() == again
    assert installed_files(engine.target.root) == {f"{n}.txt": f"{n} second" for n in ABCD}


# -- 2. rollback to the second checkpoint in the same session -------------------------------------------


def test_start_from_the_second_checkpoint_rolls_files_cache_and_later_snapshots_back(
        real: RealTarget, engine_on: Callable[..., InstallEngine]) -> None:
    engine = engine_on()
    assert engine.execute().status is Status.SUCCESS
    assert engine.target is not None
    root = engine.target.root
    before = engine.target.list_snapshots()
    assert [s.name for s in before] == FULL_RUN
    first_seen = seen_by(engine)
    finished = engine.cache.to_plain()
    assert finished == {"a": "a.txt", "b": "b.txt", "c": "c.txt", "d": "d.txt", "items": ABCD}
    (root / "stray.txt").write_text("made after d")
    (root / "c.txt").write_text("edited by hand")

    engine.volatile.update(label="second", seen=[])
    assert engine.execute(start_from="b").status is Status.SUCCESS

    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.checkpoint == "b"
    assert rolled.data["point"] == "before b"
    assert rolled.data["abandoned"] == ["b", "c", "d"]
    # the first two snapshots survive: "before b" is a's completed snapshot
    assert rolled.data["destroyed_fs_snapshots"] == [".step_b.done", ".step_c.done", ".step_d.done"]
    before_b = next(ev for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN, checkpoint="b")
                    if ev.data["point"] == "before")
    assert rolled.data["to"] == before_b.seq
    assert rolled.data["digest"] == before_b.data["digest"]

    seen = seen_by(engine)
    assert list(seen) == ["b", "c", "d"]
    # b started over the state before b: a's file, a's cache, and only the first two
    # snapshots (plus the before-point b has just taken)
    assert seen["b"]["files"] == {"a.txt": "a first"}
    assert seen["b"]["cache"] == first_seen["b"]["cache"] == {"a": "a.txt", "items": ["a"]}
    assert seen["b"]["snapshots"] == [".step_a.before", ".step_a.done", ".step_b.before"]
    assert seen["c"]["files"] == {"a.txt": "a first", "b.txt": "b second"}
    assert seen["c"]["cache"] == first_seen["c"]["cache"]

    # b, c and d rewrote their files; a's was neither rolled back nor rewritten
    assert installed_files(root) == {"a.txt": "a first", "b.txt": "b second", "c.txt": "c second",
                                     "d.txt": "d second"}
    assert engine.cache.to_plain() == finished
    after = engine.target.list_snapshots()
    assert [s.name for s in after] == [".step_a.before", ".step_a.done", ".step_b.before",
                                       ".step_b.done", ".step_c.done", ".step_d.done"]
    assert after[:2] == before[:2]  # the same snapshots, not taken again
    assert {s.id for s in after[2:]}.isdisjoint({s.id for s in before})
    assert real.tool_snapshots() == after
    assert engine.resumable() == ABCD
    assert engine.log.verify().ok


# -- 3. resumable after a restart, and after destroying snapshots by hand -------------------------------

#: case -> (checkpoints whose completed snapshot is destroyed by hand, resumable after)
DESTROYED = {
    "the last two": (["c", "d"], ["a", "b", "c"]),
    "a middle one": (["b"], ["a", "b"]),
}


@pytest.mark.parametrize("case", list(DESTROYED))
def test_after_a_restart_destroying_snapshots_by_hand_ends_what_is_resumable(
        real: RealTarget, engine_on: Callable[..., InstallEngine], case: str) -> None:
    destroyed_of, expected = DESTROYED[case]
    first = engine_on()
    assert first.execute().status is Status.SUCCESS
    first.close()

    engine = engine_on()
    assert engine.resumable() == ABCD
    assert all(v.reason is None for v in engine.explain())
    # the snapshot of checkpoint X is the one its completed point recorded
    names = [ev.data["fs_snapshot"] for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)
             if ev.checkpoint in destroyed_of and ev.data["point"] == "completed"]
    assert names == [f".step_{n}.done" for n in destroyed_of]
    for name in names:
        real.destroy_by_hand(name)
    assert [s.name for s in real.tool_snapshots()] == [n for n in FULL_RUN if n not in names]

    assert engine.resumable() == expected
    verdicts = engine.explain()
    assert all(v.reason is None for v in verdicts[: len(expected)])
    for verdict in verdicts[len(expected):]:
        assert verdict.reason is not None
        assert verdict.reason.startswith(f"filesystem snapshot missing: {names[0]} ")
    refused = ABCD[len(expected)]
    head = engine.log.head
    with pytest.raises(NotResumableError, match="filesystem snapshot missing") as info:
        engine.execute(start_from=refused)
    assert info.value.checkpoint == refused
    assert engine.log.head == head
    # a restart does not bring anything back
    engine.close()
    # an audit names what was destroyed by hand (verify opens the log read-only)
    verified = CliRunner().invoke(cli, ["verify", "--target", real.spec, "--json"])
    assert verified.exit_code == 1, verified.output
    report = json.loads(verified.stdout)
    assert report["first_bad_seq"] is None
    assert [f["name"] for f in report["fs_snapshots"] if not f["ok"]] == names
    engine = engine_on()
    assert engine.resumable() == expected

    # the latest resumable checkpoint resumes over its own snapshot
    resume = expected[-1]
    engine.volatile["label"] = "second"
    assert engine.execute(start_from=resume).status is Status.SUCCESS
    (rolled,) = engine.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == f"before {resume}"
    assert rolled.data["destroyed_fs_snapshots"] == [
        f".step_{n}.done" for n in ABCD[ABCD.index(resume):] if n not in destroyed_of]
    assert engine.target is not None
    assert installed_files(engine.target.root) == {
        f"{n}.txt": f"{n} {'first' if ABCD.index(n) < ABCD.index(resume) else 'second'}"
        for n in ABCD}
    assert engine.cache["items"] == ABCD
    # the resumed run took the missing snapshots again: everything is resumable again
    assert engine.resumable() == ABCD
    engine.close()
    assert engine_on().resumable() == ABCD


# -- 4. the history survives a rollback of the target -----------------------------------------------------


def test_a_rollback_after_a_restart_keeps_the_undone_checkpoints_in_the_history(
        real: RealTarget, engine_on: Callable[..., InstallEngine]) -> None:
    first = engine_on()
    assert first.execute().status is Status.SUCCESS
    assert first.target is not None
    state_dir = first.target.state_dir
    log_path = first.log.path
    assert log_path == state_dir / "log.db"
    assert real.state_dir_is_apart(state_dir)
    s1 = first.session.id
    first.close()
    with EventLog.open(log_path, readonly=True) as log:
        history = [(ev.seq, ev.hash) for ev in log.query()]
        undone = [(ev.seq, ev.hash) for ev in log.query(kind=EventKind.CHECKPOINT_COMPLETED)
                  if ev.checkpoint in ("c", "d")]
    assert len(undone) == 2

    second = engine_on()
    s2 = second.session.id
    assert second.execute(start_from="b").status is Status.SUCCESS
    (rolled,) = second.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["destroyed_fs_snapshots"] == [".step_b.done", ".step_c.done", ".step_d.done"]
    second.close()

    with EventLog.open(log_path, readonly=True) as log:
        assert log.verify().ok
        events = list(log.query())
        # nothing of the first session was rewound or rewritten by rolling the target back
        assert [(ev.seq, ev.hash) for ev in events[: len(history)]] == history
        completed = list(log.query(kind=EventKind.CHECKPOINT_COMPLETED))
        assert [(ev.session, ev.checkpoint) for ev in completed] == [
            (s1, "a"), (s1, "b"), (s1, "c"), (s1, "d"), (s2, "b"), (s2, "c"), (s2, "d")]
        assert set(undone) <= {(ev.seq, ev.hash) for ev in completed}
        (rolled,) = log.query(kind=EventKind.ROLLED_BACK)
        assert rolled.session == s2
        assert rolled.data["point"] == "before b"
        assert rolled.data["abandoned"] == ["b", "c", "d"]
        assert rolled.seq > max(seq for seq, _ in undone)


# -- 5. a checkpoint attaches the target mid-run ---------------------------------------------------------


def test_checkpoints_before_a_mid_run_attach_are_not_resumable_after_restart(
        real: RealTarget, engine_on: Callable[..., InstallEngine],
        open_engine: Callable[..., InstallEngine]) -> None:
    install = real.child("install")
    engine = open_engine()
    register(engine, attach_spec=install.spec)
    assert engine.execute().status is Status.SUCCESS
    assert engine.target is not None
    assert engine.target.spec == install.spec
    assert engine.log.path == engine.target.state_dir / "log.db"
    snaps = engine.target.list_snapshots()
    assert [s.name for s in snaps] == [".step_c.done", ".step_d.done"]
    assert install.tool_snapshots() == snaps
    points = [(label, fs) for label, fs, _ in snapshot_points(engine)]
    assert points == [("before a", None), ("completed a", None), ("before b", None),
                      ("completed b", None), ("before c", None), ("completed c", ".step_c.done"),
                      ("before d", ".step_c.done"), ("completed d", ".step_d.done")]
    durable = [ev.data["durable"] for ev in engine.log.query(kind=EventKind.SNAPSHOT_TAKEN)]
    assert durable == [False] * 5 + [True] * 3
    # in this session every point is still usable
    assert engine.resumable() == ABCD
    root = engine.target.root
    assert installed_files(root) == {"c.txt": "c first", "d.txt": "d first"}
    expected = engine.cache.to_plain()
    engine.close()

    again = engine_on(install.spec, attach_spec=install.spec)
    verdicts = {v.name: v for v in again.explain()}
    assert verdicts["a"].resumable  # the first checkpoint always is: a fresh attempt
    assert verdicts["a"].reason is None
    for name in ("b", "c"):
        assert not verdicts[name].resumable
        reason = verdicts[name].reason
        assert reason is not None
        assert reason.startswith(f"snapshot only volatile: before {name} was taken by session")
    assert again.resumable() == ["a", "d"]
    head = again.log.head
    with pytest.raises(NotResumableError, match="snapshot only volatile"):
        again.execute(start_from="c")
    assert again.log.head == head

    (root / "d.txt").write_text("edited by hand")
    again.volatile["label"] = "second"
    assert again.execute(start_from="d").status is Status.SUCCESS
    (rolled,) = again.log.query(kind=EventKind.ROLLED_BACK)
    assert rolled.data["point"] == "before d"
    assert rolled.data["destroyed_fs_snapshots"] == [".step_d.done"]
    assert again.cache.to_plain() == expected
    assert installed_files(root) == {"c.txt": "c first", "d.txt": "d second"}
    assert again.log.verify().ok
