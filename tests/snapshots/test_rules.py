"""The resumability rules, table-driven: the pure ``decide`` on synthetic lineages, then the
same scenarios on the real engine over a ``dir:`` target.

Filesystem snapshots are named ``.step_<checkpoint>.before`` and ``.step_<checkpoint>.done``.
Within one execution "X completed" and "before Y" are recorded together and share
``.step_X.done``; only an execution's first checkpoint gets a ``.before`` snapshot of
its own. So in the scenarios carried over from the original engine, which took one
snapshot after each checkpoint succeeded, "the snapshot of checkpoint X" is
``.step_X.done``: the one the checkpoint after X resumes over. Where a test destroys a
``.before`` snapshot it says so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from installengine.eventlog import EventKind
from installengine.snapshots import (
    FsSnapshot,
    Registered,
    When,
    check_fs_snapshots,
    decide,
    explain,
)
from installengine.statemachine import (
    Checkpoint,
    Context,
    DirectoryTarget,
    InstallEngine,
    NotResumableError,
    Status,
)

from .test_lineage import History, fingerprint

ABCD = ["a", "b", "c", "d"]


def registered(names: list[str], versions: dict[str, str] | None = None) -> list[Registered]:
    versions = versions or {}
    return [Registered(n, fingerprint(n, versions.get(n, ""))) for n in names]


@dataclass
class Case:
    """One row: a history, what is registered now, and what must be resumable and why not."""

    build: Callable[[], History]
    resumable: list[str]
    names: list[str] = field(default_factory=lambda: list(ABCD))
    versions: dict[str, str] = field(default_factory=dict)
    #: checkpoint -> a phrase its reason must contain
    reasons: dict[str, str] = field(default_factory=dict)
    first_bad_seq: Callable[[History], int] | None = None


def _all_run() -> History:
    h = History()
    h.run(*ABCD)
    return h


def _restarted(build: Callable[[], History]) -> Callable[[], History]:
    def wrapped() -> History:
        h = build()
        h.start_session("s2")
        return h
    return wrapped


def _destroying(*fs_names: str, build: Callable[[], History] = _all_run) -> Callable[[], History]:
    def wrapped() -> History:
        h = build()
        h.destroy(*fs_names)
        return h
    return wrapped


def _paused_before_third() -> History:
    h = History()
    h.run("a", "b")
    return h


def _before_attach() -> History:
    # a ran without a target; b attached it while running, so b's before-point is volatile
    # and its completed point durable; c and d ran durable.
    h = History(durable=False)
    h.execution(*ABCD, attach_in="b")
    return h


def _volatile_run() -> History:
    h = History(durable=False)
    h.run(*ABCD)
    return h


def _failed_then_continued() -> History:
    # stop_on_error=False: b failed, c and d ran after it.
    h = History()
    h.execution("a", "b!", "c", "d")
    return h


def _failed_and_stopped() -> History:
    h = History()
    h.execution("a", "b!")
    return h


def _failed_then_retried() -> History:
    # b failed and stopped the run; a plain execute() ran it again from where it stood.
    h = History()
    h.execution("a", "b!")
    h.execution("b", "c", "d")
    return h


def _failed_continued_then_retried() -> History:
    # stop_on_error=False: b failed, c and d ran; then a plain execute() ran b, c, d again.
    h = _failed_then_continued()
    h.run("b", "c", "d")
    return h


def _rerun_fresh_after_losing_the_first_snapshot() -> History:
    # .step_a.before was lost, so a resume from a was a fresh attempt (no rollback) that
    # ran everything again on top of the old lineage, re-taking every snapshot name.
    h = _all_run()
    h.destroy(".step_a.before")
    h.run(*ABCD)
    return h


def _rolled_back_to_before_b() -> History:
    h = _all_run()
    h.rollback(h.seq_of("b", When.BEFORE))
    return h


def _cleaned_up() -> History:
    h = _all_run()
    h.cleanup()
    return h


def _fs_out_of_order() -> History:
    # .step_a.done listed after .step_b.done, as if re-taken later under the same id
    h = _all_run()
    by_name = {s.name: s for s in h.fs}
    h.fs = [s for s in h.fs if s.name != ".step_a.done"]
    h.fs.insert(h.fs.index(by_name[".step_b.done"]) + 1, by_name[".step_a.done"])
    return h


def _namesake() -> History:
    # .step_a.done (before b's snapshot too) exists, but it is a newer snapshot of that
    # name, not the one recorded.
    h = _all_run()
    h.fs = [FsSnapshot(s.name, "99999999999999999999") if s.name == ".step_a.done" else s
            for s in h.fs]
    return h


def _c_started_under_another_version() -> History:
    h = History()
    h.execution("a", "b", "c!")
    h.start_session("s2")
    return h


def _volatile_paused_before_c() -> History:
    h = History(durable=False)
    h.run("a", "b")
    h.start_session("s2")
    return h


CASES = {
    # the original engine's scenarios
    "all executed: all resumable": Case(_all_run, ABCD),
    "all executed, after a restart: all resumable": Case(_restarted(_all_run), ABCD),
    "paused before the third: the first three": Case(_paused_before_third, ["a", "b", "c"],
                                                     reasons={"d": "never completed"}),
    "nothing executed: only the first": Case(History, ["a"], reasons={"b": "never completed"}),
    # a run of a, b, c, d lists .step_a.before, .step_a.done, ..., .step_d.done: each
    # "before Y" shares the snapshot of "X completed", so the last two are c's and d's.
    "last two fs snapshots (.step_c.done, .step_d.done) destroyed: all but the last": Case(
        _restarted(_destroying(".step_c.done", ".step_d.done")), ["a", "b", "c"],
        reasons={"d": "filesystem snapshot missing"}),
    "a middle one (.step_b.done) destroyed: up to and including it": Case(
        _destroying(".step_b.done"), ["a", "b"],
        reasons={"c": "filesystem snapshot missing", "d": "filesystem snapshot missing"}),
    "a different checkpoint set: only the new first": Case(
        _all_run, ["x"], names=["x", "y", "z"], reasons={"y": "registration mismatch"}),
    "a different middle name: the prefix plus the changed one": Case(
        _restarted(_all_run), ["a", "B"], names=["a", "B", "c", "d"],
        reasons={"c": "registration mismatch", "d": "registration mismatch"}),
    "a different class for one: up to and including it": Case(
        _restarted(_all_run), ["a", "b"], versions={"b": "other-class"},
        reasons={"c": "registered differently"}),
    "nothing registered: empty": Case(_all_run, [], names=[]),
    "first checkpoints ran before the target existed: those after attach, plus the first": Case(
        _restarted(_before_attach), ["a", "c", "d"], reasons={"b": "snapshot only volatile"}),
    "before the target existed, same session: all": Case(_before_attach, ABCD),
    # each rule of the SPEC
    "volatile points are refused after a restart": Case(
        _restarted(_volatile_run), ["a"], reasons={"b": "snapshot only volatile"}),
    "volatile points of this session are resumable": Case(_volatile_run, ABCD),
    "a never-started checkpoint needs its predecessor's completed point durable": Case(
        _volatile_paused_before_c, ["a"], reasons={"c": "snapshot only volatile"}),
    "the first's .step_a.before gone: the first resumes as a fresh attempt, and a snapshot "
    "lost at the start of the lineage ends what else resumes": Case(
        _destroying(".step_a.before"), ["a"], reasons={"b": "filesystem snapshot missing"}),
    "b's before-point snapshot (shared with .step_a.done) gone: b is not resumable": Case(
        _destroying(".step_a.done"), ["a"], reasons={"b": "filesystem snapshot missing"}),
    "filesystem snapshots out of order": Case(_fs_out_of_order, ["a", "b"],
                                              reasons={"c": "out of order", "d": "out of order"}),
    "a namesake filesystem snapshot is not the recorded one": Case(
        _namesake, ["a"], reasons={"b": "filesystem snapshot missing"}),
    "log damaged at b's change: nothing from b on": Case(
        _all_run, ["a"], reasons={"b": "log damaged", "d": "log damaged"},
        first_bad_seq=lambda h: h.seq_of("b", When.BEFORE) - 1),
    "log damaged from the first event: the first is still resumable": Case(
        _all_run, ["a"], reasons={"b": "log damaged"}, first_bad_seq=lambda h: 1),
    "log damaged after everything: all": Case(
        _all_run, ABCD, first_bad_seq=lambda h: len(h.events) + 1),
    "predecessor failed with stop_on_error=False": Case(
        _failed_then_continued, ["a", "b"],
        reasons={"c": "predecessor 'b' failed", "d": "predecessor 'b' failed"}),
    "predecessor failed and stopped the run": Case(
        _failed_and_stopped, ["a", "b"], reasons={"c": "predecessor 'b' failed"}),
    "a failed checkpoint retried to success: all": Case(_failed_then_retried, ABCD),
    "failed with stop_on_error=False, then retried by a plain execute: all": Case(
        _failed_continued_then_retried, ABCD),
    "everything re-run after a fresh first attempt: all": Case(
        _rerun_fresh_after_losing_the_first_snapshot, ABCD),
    "a rollback abandons later completions": Case(
        _rolled_back_to_before_b, ["a", "b"], reasons={"c": "never completed"}),
    "cleanup: only the first": Case(_cleaned_up, ["a"], reasons={"b": "never completed"}),
    "X started only under another fingerprint: resumable from its predecessor": Case(
        _c_started_under_another_version, ["a", "b", "c"], versions={"c": "v2"},
        reasons={"d": "predecessor 'c' failed"}),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_rules(case: Case):
    h = case.build()
    regs = registered(case.names, case.versions)
    bad = case.first_bad_seq(h) if case.first_bad_seq else None
    verdicts = explain(h.lineage(), regs, session=h.session, fs_snapshots=h.fs,
                       first_bad_seq=bad)
    assert [v.name for v in verdicts] == case.names
    assert [v.name for v in verdicts if v.resumable] == case.resumable
    for v in verdicts:
        assert (v.reason is None) == v.resumable, v
        if v.reason is not None:
            assert "\n" not in v.reason
    reasons = {v.name: v.reason for v in verdicts}
    for name, phrase in case.reasons.items():
        assert phrase in (reasons[name] or ""), (name, reasons[name])


def test_a_resume_rolls_back_to_the_latest_before_point_of_x():
    h = _all_run()
    lineage = h.lineage()
    decisions = decide(lineage, registered(ABCD), session=h.session, fs_snapshots=h.fs)
    for d, name in zip(decisions, ABCD, strict=True):
        assert d.point is not None
        assert d.point.seq == h.seq_of(name, When.BEFORE)
        assert not d.not_started


def test_a_never_started_checkpoint_resumes_from_its_predecessors_completed_point():
    h = _paused_before_third()
    decisions = decide(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs)
    c = decisions[2]
    assert c.verdict.resumable
    assert c.not_started
    assert c.point is not None
    assert c.point.seq == h.seq_of("b", When.COMPLETED)


def test_the_first_checkpoint_without_a_before_point_is_a_fresh_attempt():
    for h in (History(), _restarted(_volatile_run)(), _cleaned_up()):
        first = decide(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs)[0]
        assert first.verdict.resumable
        assert first.point is None


def test_a_retried_checkpoint_resumes_from_its_latest_before_point():
    h = _failed_and_stopped()
    h.before("b")  # a plain execute() ran b again, and it failed again
    b = decide(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs)[1]
    assert b.point is not None
    assert b.point.seq == h.seq_of("b", When.BEFORE)


def test_a_target_without_filesystem_snapshots_skips_the_filesystem_rule():
    h = _destroying(*(s.name for s in _all_run().fs))()
    verdicts = explain(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=None)
    assert all(v.resumable for v in verdicts)


def test_a_deliberately_pruned_ancestor_snapshot_does_not_end_resumability():
    h = _all_run()
    gone = [s for s in h.fs if s.name in (".step_a.before", ".step_a.done")]
    h.destroy(".step_a.before", ".step_a.done")
    h.event(EventKind.PRUNED, fs_snapshot_ids=[[s.name, s.id] for s in gone])
    verdicts = explain(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs)
    # b's own before-point snapshot is the pruned .step_a.done: b cannot roll back; the
    # later ones can, since only their ancestors' snapshots were pruned.
    assert [v.name for v in verdicts if v.resumable] == ["a", "c", "d"]
    assert "filesystem snapshot missing" in (verdicts[1].reason or "")


def test_a_point_that_does_not_rebuild_to_its_digest_is_not_resumable():
    h = _restarted(_all_run)()
    before_c = h.seq_of("c", When.BEFORE)
    why = "digest mismatch: the log rebuilds before c with digest 000, not the recorded 111"
    verdicts = explain(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs,
                       unrebuildable={before_c: why})
    assert [v.name for v in verdicts if v.resumable] == ["a", "b", "d"]
    assert verdicts[2].reason == why
    # the first checkpoint stays resumable, as a fresh attempt
    before_a = h.seq_of("a", When.BEFORE)
    first = decide(h.lineage(), registered(ABCD), session=h.session, fs_snapshots=h.fs,
                   unrebuildable={before_a: why})[0]
    assert first.verdict.resumable
    assert first.point is None


# -- the audit of filesystem snapshots (verify without a plan) ------------------------------


def missing(h: History) -> list[str]:
    return [c.point.fs_snapshot or "" for c in check_fs_snapshots(h.lineage(), h.fs)
            if not c.present]


def test_check_fs_snapshots_lists_each_snapshot_once_at_the_point_that_took_it():
    h = _all_run()
    checks = check_fs_snapshots(h.lineage(), h.fs)
    assert [c.point.fs_snapshot for c in checks] == [s.name for s in h.fs]
    assert all(c.present for c in checks)
    assert checks[1].point.label == "a completed"  # not "before b", which shares it


def test_check_fs_snapshots_names_what_was_removed_by_hand():
    h = _destroying(".step_b.done")()
    assert missing(h) == [".step_b.done"]


def test_check_fs_snapshots_accepts_what_a_rollback_a_cleanup_or_a_prune_removed():
    h = _all_run()
    h.rollback(h.seq_of("b", When.BEFORE))  # later snapshots go with the rollback
    assert missing(h) == []
    pruned = [s for s in h.fs if s.name == ".step_a.before"]
    h.destroy(".step_a.before")
    assert missing(h) == [".step_a.before"]
    h.event(EventKind.PRUNED, fs_snapshot_ids=[[s.name, s.id] for s in pruned])
    assert missing(h) == []
    h.destroy(*(s.name for s in h.fs))
    h.cleanup()
    assert check_fs_snapshots(h.lineage(), h.fs) == []


# -- the same scenarios on the real engine ------------------------------------------------


def step(ctx: Context) -> None:
    """Change the cache and write a file under the target, both deterministically."""
    ctx.cache[ctx.name] = len(ctx.cache)
    if ctx.target is not None:
        (ctx.target.root / f"{ctx.name}.txt").write_text(ctx.name)


def other_step(ctx: Context) -> None:
    step(ctx)


class StepClass(Checkpoint):
    def execute(self, ctx: Context) -> None:
        step(ctx)


#: names of the checkpoints ``flaky`` fails
failing: set[str] = set()


def flaky(ctx: Context) -> None:
    if ctx.name in failing:
        raise RuntimeError(f"{ctx.name} was told to fail")
    ctx.cache[f"runs-{ctx.name}"] = ctx.cache.get(f"runs-{ctx.name}", 0) + 1


def attaching_step(ctx: Context, spec: str) -> None:
    """The checkpoint that creates the install target, then attaches it."""
    Path(spec.removeprefix("dir:")).mkdir(parents=True, exist_ok=True)
    ctx.attach_target(spec)
    step(ctx)


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DirectoryTarget:
    monkeypatch.setenv("INSTALLENGINE_TMPDIR", str(tmp_path / "tmp"))
    return DirectoryTarget(tmp_path / "install")


@pytest.fixture
def engines() -> Iterator[Callable[..., InstallEngine]]:
    """Open engines (one at a time per target) and close them all at the end."""
    opened: list[InstallEngine] = []

    def open_engine(target: Any, names: list[str] = ABCD,
                    calls: dict[str, Any] | None = None, **kwargs: Any) -> InstallEngine:
        for e in opened:
            e.close()
        engine = InstallEngine(target=target)
        for name in names:
            call = (calls or {}).get(name, step)
            if isinstance(call, tuple):
                engine.register(name, call[0], **call[1])
            else:
                engine.register(name, call)
        opened.append(engine)
        return engine

    yield open_engine
    for e in opened:
        e.close()


def resumable_after_restart(engines: Callable[..., InstallEngine], target: DirectoryTarget,
                            **kwargs: Any) -> list[str]:
    return engines(target, **kwargs).resumable()


def test_engine_all_executed(engines, target):
    engine = engines(target)
    assert engine.execute().status is Status.SUCCESS
    assert engine.resumable() == ABCD
    assert resumable_after_restart(engines, target) == ABCD


def test_engine_paused_before_the_third(engines, target):
    engine = engines(target)
    assert engine.execute(pause_before="c").status is Status.PAUSED
    assert engine.resumable() == ["a", "b", "c"]
    assert resumable_after_restart(engines, target) == ["a", "b", "c"]


def test_engine_nothing_executed(engines, target):
    assert engines(target).resumable() == ["a"]
    assert resumable_after_restart(engines, target) == ["a"]


def test_engine_last_two_filesystem_snapshots_destroyed(engines, target):
    engines(target).execute()
    snaps = [s.name for s in target.list_snapshots()]
    # "c completed" and "before d" share one snapshot: nothing changes between them
    assert snaps[-2:] == [".step_c.done", ".step_d.done"]
    for name in snaps[-2:]:
        target.destroy_snapshot(name)
    assert resumable_after_restart(engines, target) == ["a", "b", "c"]


def test_engine_a_middle_filesystem_snapshot_destroyed(engines, target):
    engines(target).execute()
    target.destroy_snapshot(".step_b.done")  # the snapshot of checkpoint b
    engine = engines(target)
    assert engine.resumable() == ["a", "b"]
    assert "filesystem snapshot missing" in (engine.explain()[2].reason or "")


def test_engine_a_different_checkpoint_set(engines, target):
    engines(target).execute()
    assert resumable_after_restart(engines, target, names=["x", "y", "z"]) == ["x"]


def test_engine_a_different_middle_name(engines, target):
    engines(target).execute()
    assert resumable_after_restart(engines, target, names=["a", "B", "c", "d"]) == ["a", "B"]


def test_engine_a_different_class_for_one(engines, target):
    engines(target).execute()
    assert resumable_after_restart(engines, target, calls={"b": StepClass}) == ["a", "b"]
    assert resumable_after_restart(engines, target, calls={"c": other_step}) == ["a", "b", "c"]
    assert resumable_after_restart(
        engines, target, calls={"b": (step, {"version": "2"})}) == ["a", "b"]


def test_engine_nothing_registered(engines, target):
    engines(target).execute()
    assert resumable_after_restart(engines, target, names=[]) == []


def test_engine_checkpoints_run_before_the_target_existed(engines, target):
    spec = f"dir:{target.root}"
    calls = {"b": (attaching_step, {"args": [spec]})}
    engine = engines(None, calls=calls)
    assert engine.execute().status is Status.SUCCESS
    assert engine.target is not None
    assert engine.resumable() == ABCD  # same session: volatile points count
    after = engines(target, calls=calls)
    assert after.resumable() == ["a", "c", "d"]
    assert "snapshot only volatile" in (after.explain()[1].reason or "")


def test_engine_failure_with_stop_on_error_false_then_a_plain_retry(engines, target):
    failing.add("b")
    engine = engines(target, calls=dict.fromkeys(ABCD, flaky))
    engine.stop_on_error = False
    result = engine.execute()
    assert (result.status, result.failed) == (Status.FAILED, ["b"])
    assert engine.resumable() == ["a", "b"]
    assert "predecessor 'b' failed" in (engine.explain()[2].reason or "")
    failing.clear()
    assert engine.execute().status is Status.SUCCESS  # continues at b, then c and d again
    assert engine.resumable() == ABCD
    ran = dict(engine.cache)
    assert engine.execute().status is Status.SUCCESS  # everything completed: runs nothing
    assert dict(engine.cache) == ran
    assert resumable_after_restart(engines, target, calls=dict.fromkeys(ABCD, flaky)) == ABCD


def test_engine_refuses_a_non_resumable_start_and_changes_nothing(engines, target):
    engines(target).execute()
    target.destroy_snapshot(".step_b.done")
    engine = engines(target)
    engine.cache["app"] = {"kept": True}
    before = (engine.cache.to_plain(), engine.explain(), engine.log.head,
              target.list_snapshots(), sorted(p.name for p in target.root.iterdir()))
    with pytest.raises(NotResumableError) as err:
        engine.execute(start_from="c")
    assert err.value.checkpoint == "c"
    assert "filesystem snapshot missing" in err.value.reason
    after = (engine.cache.to_plain(), engine.explain(), engine.log.head,
             target.list_snapshots(), sorted(p.name for p in target.root.iterdir()))
    assert after == before


def test_engine_log_damage_limits_what_resumes(engines, target):
    engines(target).execute()
    engines(target, names=[]).close()  # release the target
    log_path = target.state_dir / "log.db"
    with sqlite3.connect(log_path) as conn:
        seq = conn.execute("SELECT min(seq) FROM events WHERE kind = 'snapshot-taken' "
                           "AND checkpoint = 'c'").fetchone()[0]
        conn.execute("UPDATE events SET ts = 'tampered' WHERE seq = ?", (seq,))
    engine = engines(target)
    assert engine.resumable() == ["a", "b"]
    assert "log damaged" in (engine.explain()[2].reason or "")
