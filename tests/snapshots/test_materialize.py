"""materialize(): the nearest verified snapshot file plus later diffs, checked by digest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from installengine.eventlog import EventKind, EventLog, canonical_json
from installengine.snapshots import (
    DataCache,
    Recorder,
    SnapshotPoint,
    SnapshotStore,
    SnapshotUnavailableError,
    When,
    check_files,
    materialize,
    read_lineage,
    state_digest,
)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    log = EventLog.open(tmp_path / "log.db", durable=False)
    store = SnapshotStore(tmp_path / "snapshots", durable=False)
    yield Recorder(log, store, DataCache(), session="s1", durable=False, target=None)
    log.close()


def take(rec: Recorder, name: str, when: When = When.COMPLETED) -> SnapshotPoint:
    return rec.take_point(name, when, fingerprint=f"fp-{name}", attempt=1)


def build_history(rec: Recorder, points: int = 6) -> list[tuple[SnapshotPoint, dict[str, Any]]]:
    """Points with changes of every kind between them; each with the state it fixed."""
    p = rec.cache.persistent
    taken = []
    for i in range(points):
        p[f"k{i}"] = {"i": i, "items": list(range(i))}
        if i >= 1:
            p[f"k{i - 1}"]["items"].append("more")
        if i >= 2:
            del p[f"k{i - 2}"]
            p.setdefault("log", []).insert(0, i)
        taken.append((take(rec, f"c{i}"), rec.cache.to_plain()))
    return taken


def rebuild(rec: Recorder, point: SnapshotPoint, *, files: bool = True) -> dict[str, Any]:
    state, tree = materialize(rec.log, read_lineage(rec.log), point.seq,
                              rec.store if files else None)
    assert tree.hexdigest() == point.digest
    return state


def test_every_point_rebuilds_from_the_log_alone(recorder):
    for point, state in build_history(recorder):
        assert rebuild(recorder, point, files=False) == state
        assert state_digest(state) == point.digest


def test_a_point_rebuilds_from_its_snapshot_file(recorder):
    history = build_history(recorder)
    point, state = history[3]
    recorder.store.write(point.seq, point.digest, canonical_json(state))
    for p, s in history:
        assert rebuild(recorder, p) == s


def test_the_nearest_file_is_used_instead_of_the_log_before_it(recorder, tmp_path):
    history = build_history(recorder)
    filed, filed_state = history[3]
    recorder.store.write(filed.seq, filed.digest, canonical_json(filed_state))
    # Damage a change recorded before the file: only a rebuild that starts at the
    # file can still succeed.
    early = history[1][0].diffs[0]
    with sqlite3.connect(recorder.log.path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = ?",
                     (orjson.dumps({"patch": [{"op": "add", "path": "/x", "value": 1}]}).decode(),
                      early))
    last, last_state = history[-1]
    assert rebuild(recorder, last) == last_state
    with pytest.raises(SnapshotUnavailableError, match=r"digest mismatch|does not apply"):
        rebuild(recorder, last, files=False)


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"k0": {"i"', id="truncated"),
    pytest.param(b"\x00\xff garbage", id="garbage"),
    pytest.param(b'{"other": 1}', id="another-object"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"null", id="null"),
    pytest.param(b"42", id="number"),
    pytest.param(b"NaN", id="nan"),
])
@pytest.mark.parametrize("which", ["at-the-point", "before-the-point"])
def test_a_corrupt_file_falls_back_to_the_log_and_still_matches_the_digest(
        recorder, content, which):
    history = build_history(recorder)
    point, state = history[-1]
    filed = point if which == "at-the-point" else history[2][0]
    recorder.store.write(filed.seq, filed.digest, content)
    assert rebuild(recorder, point) == state


def test_a_file_holding_another_points_state_is_not_trusted(recorder):
    history = build_history(recorder)
    s2, (p4, s4) = history[2][1], history[4]
    recorder.store.write(p4.seq, p4.digest, canonical_json(s2))
    assert rebuild(recorder, p4) == s4


def test_a_symlinked_file_is_ignored(recorder, tmp_path):
    history = build_history(recorder)
    point, state = history[-1]
    bogus = tmp_path / "bogus.json"
    bogus.write_bytes(b'{"planted": true}')
    recorder.store.directory.mkdir(parents=True, exist_ok=True)
    recorder.store.path_for(point.seq, point.digest).symlink_to(bogus)
    assert rebuild(recorder, point) == state


def test_a_missing_file_is_rebuilt_from_the_log(recorder):
    history = build_history(recorder)
    point, state = history[-1]
    recorder.store.write(point.seq, point.digest, canonical_json(state))
    assert recorder.store.remove(point.seq, point.digest)
    assert rebuild(recorder, point) == state


def test_a_tampered_change_without_a_file_is_a_digest_mismatch(recorder):
    history = build_history(recorder)
    point, _ = history[-1]
    seq = point.diffs[0]
    ev = recorder.log.get(seq)
    assert ev is not None
    patch = ev.data["patch"]
    patch[0] = {"op": "add", "path": "/planted", "value": True}
    with sqlite3.connect(recorder.log.path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = ?",
                     (orjson.dumps({**ev.data, "patch": patch}).decode(), seq))
    with pytest.raises(SnapshotUnavailableError, match="digest mismatch"):
        rebuild(recorder, point)


def test_a_change_that_does_not_apply_is_reported(recorder):
    history = build_history(recorder)
    point, _ = history[-1]
    seq = point.diffs[0]
    ev = recorder.log.get(seq)
    assert ev is not None
    with sqlite3.connect(recorder.log.path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = ?",
                     (orjson.dumps({**ev.data, "patch": [
                         {"op": "remove", "path": "/never/there"}]}).decode(), seq))
    with pytest.raises(SnapshotUnavailableError, match="does not apply"):
        rebuild(recorder, point)


def test_a_missing_change_event_is_reported(recorder):
    history = build_history(recorder)
    point, _ = history[-1]
    with sqlite3.connect(recorder.log.path) as conn:
        conn.execute("UPDATE events SET kind = 'paused' WHERE seq = ?", (point.diffs[0],))
    with pytest.raises(SnapshotUnavailableError, match="missing from the log"):
        rebuild(recorder, point)


def test_an_unknown_point_is_refused(recorder):
    build_history(recorder, 2)
    with pytest.raises(SnapshotUnavailableError, match="not in the log"):
        materialize(recorder.log, read_lineage(recorder.log), 10_000, recorder.store)


def test_a_point_without_changes_equals_its_parent(recorder):
    recorder.cache.persistent["a"] = 1
    first = take(recorder, "c0", When.BEFORE)
    second = take(recorder, "c0", When.COMPLETED)
    assert second.diffs == ()
    assert second.parent == first.seq
    assert rebuild(recorder, second) == {"a": 1}


def test_points_on_an_abandoned_branch_still_rebuild(recorder):
    history = build_history(recorder, 4)
    back_to, back_state = history[1]
    recorder.rollback_to(back_to, checkpoint="c2", attempt=2)
    assert recorder.cache.to_plain() == back_state
    recorder.cache.persistent["branch"] = "new"
    branched = take(recorder, "c2")
    assert branched.parent == back_to.seq
    assert rebuild(recorder, branched) == {**back_state, "branch": "new"}
    for point, state in history:  # the abandoned branch is history, and still readable
        assert rebuild(recorder, point) == state


def test_the_whole_cache_recorded_after_a_rebase_rebuilds_without_a_parent(recorder):
    build_history(recorder, 3)
    recorder.rebase()
    point = take(recorder, "c0", When.BEFORE)
    assert point.parent is None
    assert rebuild(recorder, point, files=False) == recorder.cache.to_plain()


def test_recorder_writes_a_file_once_changes_add_up(recorder):
    p = recorder.cache.persistent
    for i in range(4):
        p[f"blob{i}"] = "x" * 100_000
        take(recorder, f"c{i}")
    files = recorder.store.files()
    assert len(files) == 1  # 300 KB of changes passed the 256 KB threshold once
    point = recorder.lineage.points[files[0].seq]
    assert rebuild(recorder, point) == {f"blob{i}": "x" * 100_000 for i in range(3)}


def filed_history(rec: Recorder) -> tuple[SnapshotPoint, list[tuple[SnapshotPoint, dict[str, Any]]]]:
    """A state big enough for the recorder to write a file, then points with edits after it."""
    p = rec.cache.persistent
    p["log"] = []
    take(rec, "small")  # so that the big point has a parent: the first point gets no file
    p["payload"] = {f"pkg{i:05d}": {"v": f"1.{i}", "sum": "ab" * 20} for i in range(6000)}
    filed = take(rec, "big")
    assert rec.store.has(filed.seq, filed.digest)
    after = []
    for i in range(5):
        p["payload"][f"pkg{i * 7:05d}"] = {"v": "2.0"}
        del p["payload"][f"pkg{i * 11 + 1:05d}"]
        p["log"].append(f"step {i}")
        p["log"].insert(0, i)
        after.append((take(rec, f"c{i}"), rec.cache.to_plain()))
    return filed, after


def test_a_file_the_log_vouches_for_loads_without_hashing_every_entry(recorder):
    filed, after = filed_history(recorder)
    stored = recorder.lineage.stored[filed.seq]
    assert stored["digest"] == filed.digest
    assert len(stored["sums"]) == 2
    for point, state in after:
        got, tree = materialize(recorder.log, read_lineage(recorder.log), point.seq, recorder.store)
        assert got == state
        assert tree.hexdigest() == point.digest == state_digest(state)
        payload = tree._root.children["payload"]
        assert payload.partial
        assert len(payload.children) < 20


def test_a_vouched_file_with_other_bytes_is_not_used(recorder):
    # The sums alone would make any state of the same shape pass the digest check, so the
    # file's bytes must be the ones the log recorded.
    filed, after = filed_history(recorder)
    forged = read_lineage(recorder.log)
    state, _ = materialize(recorder.log, forged, filed.seq, recorder.store)
    state["payload"]["pkg00003"]["v"] = "9.9"
    path = recorder.store.path_for(filed.seq, filed.digest)
    path.write_bytes(canonical_json(state))
    point, expected = after[-1]
    got, tree = materialize(recorder.log, read_lineage(recorder.log), point.seq, recorder.store)
    assert got == expected
    assert tree.hexdigest() == point.digest


@pytest.mark.parametrize("sums", [None, "x", [[["payload"], True, 1, 0, "0" * 64]]])
def test_a_file_with_unusable_sums_is_checked_by_rebuilding_its_tree(recorder, sums):
    filed, after = filed_history(recorder)
    stored = recorder.lineage.stored[filed.seq]
    recorder.append(EventKind.SNAPSHOT_STORED, checkpoint="big", data={**stored, "sums": sums})
    point, expected = after[-1]
    got, tree = materialize(recorder.log, read_lineage(recorder.log), point.seq, recorder.store)
    assert got == expected
    assert tree.hexdigest() == point.digest
    assert not tree._partial


def test_a_big_first_point_gets_sums_in_the_log_instead_of_a_file(recorder):
    # Its diffs already hold the whole state: the log rebuilds it, and the sums recorded
    # with it spare that rebuild from hashing every entry.
    p = recorder.cache.persistent
    p["payload"] = {f"pkg{i:05d}": {"v": f"1.{i}", "sum": "ab" * 20} for i in range(6000)}
    first = take(recorder, "first")
    states = {first.seq: recorder.cache.to_plain()}
    assert recorder.store.files() == []
    assert recorder.lineage.stored[first.seq]["in_log"] is True
    p["payload"]["pkg00001"] = {"v": "2.0"}
    second = take(recorder, "second")
    states[second.seq] = recorder.cache.to_plain()
    for point in (first, second):
        got, tree = materialize(recorder.log, read_lineage(recorder.log), point.seq,
                                recorder.store)
        assert got == states[point.seq]
        assert tree.hexdigest() == point.digest == state_digest(got)
        assert tree._partial


def test_sums_in_the_log_that_do_not_fit_mean_a_full_rebuild(recorder):
    p = recorder.cache.persistent
    p["payload"] = {f"pkg{i:05d}": {"v": f"1.{i}"} for i in range(12000)}
    first = take(recorder, "first")
    stored = recorder.lineage.stored[first.seq]
    recorder.append(EventKind.SNAPSHOT_STORED, checkpoint="first",
                    data={**stored, "sums": [[[], True, 99, 0, "0" * 64]]})
    got, tree = materialize(recorder.log, read_lineage(recorder.log), first.seq, None)
    assert tree.hexdigest() == first.digest == state_digest(got)
    assert not tree._partial


def test_verify_names_a_vouched_file_whose_bytes_changed_even_if_its_state_did_not(recorder):
    filed, _ = filed_history(recorder)
    path = recorder.store.path_for(filed.seq, filed.digest)
    state = orjson.loads(path.read_bytes())
    path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))  # same state, other bytes
    (check,) = check_files(recorder.log, read_lineage(recorder.log), recorder.store)
    assert not check.ok
    assert check.rebuildable
