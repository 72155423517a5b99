"""DataCache and its tracked views: every change recorded with its actor, nothing lost."""

from __future__ import annotations

import copy
import datetime
import decimal
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from installengine.eventlog import UsageError, canonical_json
from installengine.eventlog.hashing import shown
from installengine.snapshots import CacheDict, CacheList, DataCache, apply, state_digest
from installengine.snapshots.cache import change_data, patch_of
from installengine.snapshots.diff import pointer

from .test_diff import JSON_OBJECTS, JSON_VALUES, KEYS, SCALARS, same_json

ACTORS = st.sampled_from([None, "partition", "configure"])
#: containers large enough to cross the digest's packing limit (256 entries)
BIG = st.integers(250, 262).map(lambda n: list(range(n))) | st.integers(250, 262).map(
    lambda n: {f"k{i}": i for i in range(n)})
VALUES = JSON_VALUES | BIG


def plain(value: Any) -> Any:
    """A view's plain value; anything else as it is."""
    return value.to_plain() if isinstance(value, (CacheDict, CacheList)) else value


def containers(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every container inside ``value`` with its path, the root first."""
    found = [(path, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, (dict, list)):
            found.extend(containers(child, (*path, key)))
    return found


def view_at(root: CacheDict, path: tuple[str | int, ...]) -> Any:
    node: Any = root
    for key in path:
        node = node[key]
    return node


def plain_at(root: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        root = root[key]
    return root


def random_edit(data: st.DataObject, cache: DataCache, shadow: dict[str, Any]) -> str:
    """Make one random edit through the views and the same edit on ``shadow``; describe it."""
    path, _ = data.draw(st.sampled_from(containers(shadow)), label="container")
    view = view_at(cache.persistent, path)
    node = plain_at(shadow, path)
    cache.actor = data.draw(ACTORS, label="actor")
    if isinstance(node, dict):
        ops = ["set", "set", "setdefault", "update"]
        if node:
            ops += ["delete", "pop", "popitem", "set-existing", "nested"]
        op = data.draw(st.sampled_from(ops), label="op")
        if op in ("set", "set-existing", "setdefault"):
            key = (data.draw(st.sampled_from(sorted(node)), label="key") if op == "set-existing"
                   else data.draw(KEYS, label="key"))
            value = data.draw(VALUES, label="value")
            if op == "setdefault":
                got = view.setdefault(key, value)
                expected = node.setdefault(key, copy.deepcopy(value))
                assert same_json(plain(got), expected)
            else:
                view[key] = value
                node[key] = copy.deepcopy(value)
        elif op == "update":
            more = data.draw(st.dictionaries(KEYS, VALUES, max_size=3), label="value")
            view.update(more)
            node.update(copy.deepcopy(more))
        elif op == "delete":
            key = data.draw(st.sampled_from(sorted(node)), label="key")
            del view[key]
            del node[key]
        elif op == "pop":
            key = data.draw(st.sampled_from(sorted(node)), label="key")
            assert same_json(view.pop(key), node.pop(key))
        elif op == "popitem":
            key, value = view.popitem()
            assert same_json(value, node.pop(key))
        else:  # "nested": mutate a value read from the cache in place
            key = data.draw(st.sampled_from(sorted(node)), label="key")
            child = view[key]
            if isinstance(child, CacheDict):
                child["nested"] = 1
                node[key]["nested"] = 1
            elif isinstance(child, CacheList):
                child.append("nested")
                node[key].append("nested")
            else:
                view[key] = [child]
                node[key] = [node[key]]
        return f"{op} at {path}"
    ops = ["append", "insert", "extend", "iadd"]
    if node:
        ops += ["set", "set-negative", "pop", "pop-index", "delete", "delete-slice", "remove",
                "reverse", "clear", "nested", "slice-nested"]
    op = data.draw(st.sampled_from(ops), label="op")
    n = len(node)
    if op == "append":
        value = data.draw(VALUES, label="value")
        view.append(value)
        node.append(copy.deepcopy(value))
    elif op == "insert":
        index = data.draw(st.integers(-n - 2, n + 2), label="index")
        value = data.draw(VALUES, label="value")
        view.insert(index, value)
        node.insert(index, copy.deepcopy(value))
    elif op in ("extend", "iadd"):
        more = data.draw(st.lists(SCALARS, max_size=3), label="value")
        if op == "extend":
            view.extend(more)
        else:
            view += more
        node.extend(more)
    elif op in ("set", "set-negative"):
        index = data.draw(st.integers(0, n - 1) if op == "set" else st.integers(-n, -1),
                          label="index")
        value = data.draw(VALUES, label="value")
        view[index] = value
        node[index] = copy.deepcopy(value)
    elif op == "pop":
        assert same_json(view.pop(), node.pop())
    elif op == "pop-index":
        index = data.draw(st.integers(-n, n - 1), label="index")
        assert same_json(view.pop(index), node.pop(index))
    elif op == "delete":
        index = data.draw(st.integers(-n, n - 1), label="index")
        del view[index]
        del node[index]
    elif op == "delete-slice":
        start = data.draw(st.integers(-n, n), label="start")
        stop = data.draw(st.integers(-n, n), label="stop")
        step = data.draw(st.sampled_from([None, 1, 2, -1]), label="step")
        del view[start:stop:step]
        del node[start:stop:step]
    elif op == "remove":
        value = node[data.draw(st.integers(0, n - 1), label="index")]
        view.remove(copy.deepcopy(value))
        node.remove(value)
    elif op == "reverse":
        view.reverse()
        node.reverse()
    elif op == "clear":
        view.clear()
        node.clear()
    elif op == "nested":
        index = data.draw(st.integers(0, n - 1), label="index")
        child = view[index]
        if isinstance(child, CacheDict):
            child["nested"] = 2
            node[index]["nested"] = 2
        elif isinstance(child, CacheList):
            child.insert(0, "nested")
            node[index].insert(0, "nested")
        else:
            view[index] = {"was": child}
            node[index] = {"was": node[index]}
    else:  # "slice-nested": a slice holds views of the items, like a list holds references
        items = view[:]
        for item, twin in zip(items, node, strict=True):
            if isinstance(item, CacheDict):
                item["sliced"] = True
                twin["sliced"] = True
            elif isinstance(item, CacheList):
                item.append("sliced")
                twin.append("sliced")
    return f"{op} at {path}"


def check_agrees(cache: DataCache, shadow: dict[str, Any]) -> None:
    assert same_json(cache.to_plain(), shadow)
    assert cache.persistent == shadow
    assert cache.digest() == state_digest(shadow)


# -- every change is recorded, and the record replays --------------------------------------


@settings(max_examples=100, deadline=None)
@given(start=JSON_OBJECTS, data=st.data())
def test_random_edits_replay_from_the_start_state(start, data):
    cache = DataCache(copy.deepcopy(start))
    shadow = copy.deepcopy(start)
    for _ in range(data.draw(st.integers(1, 12), label="edits")):
        random_edit(data, cache, shadow)
        check_agrees(cache, shadow)
    replayed = apply(copy.deepcopy(start), patch_of(cache.take_changes()))
    assert same_json(replayed, shadow)
    assert cache.take_changes() == []


@settings(max_examples=100, deadline=None)
@given(start=JSON_OBJECTS, data=st.data(), base=st.none() | st.integers(1, 2**40),
       actor=st.none() | st.text(max_size=8))
def test_the_recorded_change_text_is_the_canonical_json_of_its_value(start, data, base, actor):
    # The log stores the text it is handed for cache changes without serialising the value
    # again, so the text spliced from each operation's must be exactly canonical JSON.
    cache = DataCache(copy.deepcopy(start))
    for _ in range(data.draw(st.integers(0, 8), label="edits")):
        random_edit(data, cache, copy.deepcopy(cache.to_plain()))
    if data.draw(st.booleans(), label="whole"):
        cache.record_whole()
    checked = change_data(cache.take_changes(), actor, base)
    assert checked.text == canonical_json(checked.value)
    assert checked.value["by"] == (actor or "application")


@settings(max_examples=50, deadline=None)
@given(start=JSON_OBJECTS, data=st.data())
def test_changes_taken_in_batches_replay_batch_by_batch(start, data):
    cache = DataCache(copy.deepcopy(start))
    shadow = copy.deepcopy(start)
    state = copy.deepcopy(start)
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        for _ in range(data.draw(st.integers(0, 4), label="edits")):
            random_edit(data, cache, shadow)
        state = apply(state, patch_of(cache.take_changes()))
        assert same_json(state, shadow)


def test_each_change_carries_its_actor():
    cache = DataCache()
    cache.persistent["a"] = 1
    cache.actor = "partition"
    cache.persistent["b"] = {"x": []}
    cache.persistent["b"]["x"].append(2)
    cache.actor = None
    del cache.persistent["a"]
    changes = cache.take_changes()
    assert [(c.op["op"], c.op["path"], c.actor) for c in changes] == [
        ("add", "/a", None), ("add", "/b", "partition"), ("add", "/b/x/0", "partition"),
        ("remove", "/a", None)]


def test_keys_are_escaped_as_json_pointers():
    cache = DataCache()
    cache.persistent["a/b"] = {"~c": 1}
    cache.persistent["a/b"]["~c"] = 2
    assert [c.op["path"] for c in cache.take_changes()] == ["/a~1b", "/a~1b/~0c"]


def test_untake_puts_changes_back_in_front():
    cache = DataCache()
    cache.persistent["a"] = 1
    first = cache.take_changes()
    cache.persistent["b"] = 2
    cache.untake(first)
    assert [c.op["path"] for c in cache.take_changes()] == ["/a", "/b"]


@given(JSON_OBJECTS)
def test_record_whole_replays_from_the_empty_cache(state):
    cache = DataCache(copy.deepcopy(state))
    cache.persistent["extra"] = 1
    cache.record_whole()
    patch = patch_of(cache.take_changes())
    assert len(patch) == 1
    assert same_json(apply({}, patch), cache.to_plain())


def test_restore_discards_pending_changes_and_rebuilds_the_digest():
    cache = DataCache()
    cache.persistent["a"] = 1
    cache.restore({"b": [1, 2]})
    assert cache.take_changes() == []
    assert cache.digest() == state_digest({"b": [1, 2]})
    cache.persistent["b"].append(3)
    assert cache.digest() == state_digest({"b": [1, 2, 3]})


def test_pending_size_grows_with_the_change_not_the_cache():
    cache = DataCache({"big": "x" * 1_000_000})
    cache.persistent["small"] = "y" * 1000
    assert 1000 <= cache.pending_size < 2000


# -- non-JSON values are refused at set time, with the path -------------------------------


class Opaque:
    pass


BAD_VALUES = [
    pytest.param(Opaque(), "is a Opaque", id="object"),
    pytest.param(math.nan, "nan", id="nan"),
    pytest.param(math.inf, "inf", id="inf"),
    pytest.param(-math.inf, "inf", id="-inf"),
    pytest.param(2**64, "64 bits", id="huge-int"),
    pytest.param(-(2**63) - 1, "64 bits", id="huge-negative-int"),
    pytest.param({1: "x"}, "not a string", id="int-key"),
    pytest.param({True: "x"}, "not a string", id="bool-key"),
    pytest.param({None: "x"}, "not a string", id="none-key"),
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(b"raw", "bytes", id="bytes"),
    pytest.param(decimal.Decimal("1.5"), "Decimal", id="decimal"),
    pytest.param(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), "datetime", id="datetime"),
    pytest.param(Path("/dev/sda"), "Path", id="path"),
    pytest.param("\ud800", "surrogate", id="lone-surrogate"),
    pytest.param({"\udc00": 1}, "surrogate", id="lone-surrogate-key"),
]


SETTERS = [
    pytest.param("/new", lambda p, v: p.__setitem__("new", v), id="root"),
    pytest.param("/obj/inner/new", lambda p, v: p["obj"]["inner"].__setitem__("new", v),
                 id="nested"),
    pytest.param("/list/1", lambda p, v: p["list"].__setitem__(1, v), id="list-set"),
    pytest.param("/list/2", lambda p, v: p["list"].__setitem__(-1, v), id="list-negative"),
    pytest.param("/list/3", lambda p, v: p["list"].append(v), id="list-append"),
    pytest.param("/list/0", lambda p, v: p["list"].insert(0, v), id="list-insert"),
    pytest.param("/new/a/1/b", lambda p, v: p.__setitem__("new", {"a": [0, {"b": v}]}),
                 id="deep-inside"),
    pytest.param("/obj/new", lambda p, v: p["obj"].update({"new": v}), id="update"),
    pytest.param("/new", lambda p, v: p.setdefault("new", v), id="setdefault"),
]


@pytest.mark.parametrize(("bad", "says"), BAD_VALUES)
@pytest.mark.parametrize(("where", "store"), SETTERS)
def test_non_json_is_refused_with_its_path_and_nothing_is_recorded(bad, says, where, store):
    start = {"obj": {"inner": {}}, "list": [0, 1, 2]}
    cache = DataCache(copy.deepcopy(start))
    digest = cache.digest()
    with pytest.raises(UsageError) as err:
        store(cache.persistent, bad)
    message = str(err.value)
    assert f"at {where} " in message
    assert says in message
    assert cache.take_changes() == []
    assert cache.to_plain() == start
    assert cache.digest() == digest


@pytest.mark.parametrize("key", [1, 1.5, None, ("a",)])
def test_non_string_keys_are_refused_at_every_level(key):
    cache = DataCache({"obj": {}})
    with pytest.raises(UsageError, match="string"):
        cache.persistent[key] = 1
    with pytest.raises(UsageError, match="string"):
        cache.persistent["obj"][key] = 1
    assert cache.take_changes() == []


@given(start=JSON_OBJECTS, data=st.data())
def test_a_bad_value_anywhere_is_refused_with_its_pointer(start, data):
    value = copy.deepcopy(start)
    path, node = data.draw(st.sampled_from(containers(value)), label="container")
    bad = data.draw(st.sampled_from([Opaque(), math.nan, 2**70, {3: 4}]), label="bad")
    if isinstance(node, dict):
        key: str | int = data.draw(KEYS.filter(lambda k: k not in node), label="key")
        node[key] = bad
    else:
        key = data.draw(st.integers(0, len(node)), label="index")
        node.insert(key, bad)
    expected = "/v" + pointer((*path, key))
    cache = DataCache()
    with pytest.raises(UsageError) as err:
        cache.persistent["v"] = value
    assert f"at {shown(expected)} " in str(err.value)
    assert cache.take_changes() == []
    assert cache.to_plain() == {}


def test_out_of_range_index_is_refused_and_not_recorded():
    cache = DataCache({"l": [1]})
    with pytest.raises(UsageError, match="out of range"):
        cache.persistent["l"][5] = 2
    with pytest.raises(IndexError):
        del cache.persistent["l"][5]
    assert cache.take_changes() == []


def test_slice_assignment_is_refused():
    cache = DataCache({"l": [1, 2]})
    with pytest.raises(UsageError, match="slice"):
        cache.persistent["l"][0:1] = [9]
    assert cache.take_changes() == []
    assert cache.to_plain() == {"l": [1, 2]}


def test_tuples_are_stored_as_arrays_and_read_back_as_lists():
    # Decision: like json.dumps, a tuple is a JSON array. What is stored and read back
    # is a list, in this session and after a restart alike, so nothing changes on resume.
    cache = DataCache()
    cache.persistent["size"] = (1, 2)
    cache.persistent["nested"] = {"t": (3, (4, 5))}
    assert cache.persistent["size"] == [1, 2]
    assert cache.to_plain() == {"size": [1, 2], "nested": {"t": [3, [4, 5]]}}
    assert [c.op["value"] for c in cache.take_changes()] == [[1, 2], {"t": [3, [4, 5]]}]


def test_stored_values_are_copied_in():
    original = {"a": [1]}
    cache = DataCache()
    cache.persistent["v"] = original
    original["a"].append(2)  # the caller's object is not the cache's
    assert cache.to_plain() == {"v": {"a": [1]}}
    cache.persistent["w"] = cache.persistent["v"]  # a view is copied too
    cache.persistent["w"]["a"].append(3)
    assert cache.to_plain() == {"v": {"a": [1]}, "w": {"a": [1, 3]}}


# -- values read from the cache are tracked views ------------------------------------------


def test_in_place_mutation_of_read_values_is_recorded():
    cache = DataCache({"disks": [{"name": "sda", "parts": []}], "opts": {}})
    p = cache.persistent
    disks = p["disks"]
    disks[0]["parts"].append({"size": 10})
    p.get("opts")["fs"] = "zfs"
    for disk in disks:
        disk["seen"] = True
    for _key, value in p.items():
        if isinstance(value, CacheDict):
            value["touched"] = 1
    next(iter(p.values())).append("x")
    p.setdefault("new", []).append(1)  # setdefault hands back the stored value, tracked
    expected = {"disks": [{"name": "sda", "parts": [{"size": 10}], "seen": True}, "x"],
                "opts": {"fs": "zfs", "touched": 1}, "new": [1]}
    assert cache.to_plain() == expected
    assert same_json(apply({"disks": [{"name": "sda", "parts": []}], "opts": {}},
                           patch_of(cache.take_changes())), expected)


def test_popped_values_are_detached_copies():
    cache = DataCache({"l": [{"a": 1}, {"a": 2}], "d": {"k": {"z": 1}}})
    first = cache.persistent["l"].pop(0)
    assert first == {"a": 1}  # the popped item, not the one that moved into its place
    first["a"] = 99  # no longer in the cache: changes nothing there
    k = cache.persistent["d"].pop("k")
    assert k == {"z": 1}
    key, value = cache.persistent.popitem()
    assert (key, value) in [("l", [{"a": 2}]), ("d", {})]
    assert not isinstance(value, (CacheDict, CacheList))
    assert cache.persistent.pop("missing", "default") == "default"
    with pytest.raises(KeyError):
        cache.persistent.pop("missing")


def test_reverse_keeps_every_item():
    cache = DataCache({"l": [[1], {"b": 2}, [3]]})
    cache.persistent["l"].reverse()
    assert cache.to_plain() == {"l": [[3], {"b": 2}, [1]]}
    assert same_json(apply({"l": [[1], {"b": 2}, [3]]}, patch_of(cache.take_changes())),
                     {"l": [[3], {"b": 2}, [1]]})


def test_to_plain_is_an_independent_copy():
    cache = DataCache({"a": {"b": [1]}})
    plain = cache.persistent["a"].to_plain()
    plain["b"].append(2)
    assert cache.to_plain() == {"a": {"b": [1]}}
    assert cache.take_changes() == []


def test_a_view_whose_path_changed_type_refuses_instead_of_writing_elsewhere():
    cache = DataCache({"a": {"b": 1}})
    view = cache.persistent["a"]
    cache.persistent["a"] = [1, 2]
    with pytest.raises(UsageError):
        view["c"] = 3
    assert cache.to_plain() == {"a": [1, 2]}
    del cache.persistent["a"]
    with pytest.raises(UsageError, match="is stale"):
        view["c"] = 3
    assert cache.to_plain() == {}


def test_a_view_of_an_element_that_an_insert_moved_refuses_instead_of_writing_its_neighbour():
    cache = DataCache({"l": [{"x": 0}, {"x": 1}, {"x": 2}]})
    held = cache.persistent["l"][1]
    cache.persistent["l"].insert(0, {"x": -1})
    with pytest.raises(UsageError, match=r"view of cache path /l/1 is stale: .* read it again"):
        held["x"] = 99
    with pytest.raises(UsageError, match="is stale"):
        _ = held["x"]  # reading through it is refused too
    assert cache.to_plain() == {"l": [{"x": -1}, {"x": 0}, {"x": 1}, {"x": 2}]}
    cache.persistent["l"][2]["x"] = 99  # read again: the element it meant
    assert cache.to_plain()["l"][2] == {"x": 99}


def test_a_view_of_a_replaced_value_refuses_to_write_into_its_replacement():
    cache = DataCache({"d": {"old": True}})
    held = cache.persistent["d"]
    cache.persistent["d"] = {"new": True}
    with pytest.raises(UsageError, match="is stale"):
        held["x"] = 1
    with pytest.raises(UsageError, match="is stale"):
        held.clear()
    assert cache.to_plain() == {"d": {"new": True}}


def test_after_a_rollback_views_of_values_are_stale_and_the_root_view_goes_on():
    cache = DataCache({"d": {"n": 1}})
    root, held = cache.persistent, cache.persistent["d"]
    cache.restore({"d": {"n": 0}})
    with pytest.raises(UsageError, match="is stale"):
        held["n"] = 5
    root["d"]["n"] = 2
    assert cache.to_plain() == {"d": {"n": 2}}


def test_views_compare_like_their_values_and_are_unhashable():
    cache = DataCache({"a": {"b": [1, 2]}})
    assert cache.persistent["a"] == {"b": [1, 2]}
    assert cache.persistent["a"]["b"] == [1, 2]
    assert cache.persistent["a"] == cache.persistent["a"]
    assert cache.persistent["a"]["b"] != [2, 1]
    with pytest.raises(TypeError):
        hash(cache.persistent["a"])
    assert "CacheDict" in repr(cache.persistent["a"])


# -- volatile --------------------------------------------------------------------------------


def test_volatile_is_never_recorded_and_takes_any_value():
    cache = DataCache()
    digest = cache.digest()
    cache.volatile["handle"] = Opaque()
    cache.volatile["password"] = "hunter2"
    cache.volatile.setdefault("list", []).append(math.nan)
    assert cache.take_changes() == []
    assert cache.digest() == digest
    assert "password" not in cache.dumps().decode()
    cache.restore({"a": 1})
    assert cache.volatile["password"] == "hunter2"  # a rollback never touches it


def nested(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"d": value}
    return value


@pytest.mark.parametrize("depth", [199, 200, 201, 230])
@pytest.mark.parametrize("through", ["set", "insert"])
def test_the_depth_limit_is_the_same_on_the_fast_path(depth, through):
    # orjson itself goes 254 deep, so the fast path has to refuse 201-254 on its own.
    cache = DataCache({"l": []})
    value = nested(depth)
    store = ((lambda: cache.persistent.__setitem__("v", value)) if through == "set"
             else (lambda: cache.persistent["l"].insert(0, value)))
    if depth <= 200:
        store()
        assert cache.to_plain()["v" if through == "set" else "l"] in (value, [value])
    else:
        with pytest.raises(UsageError, match="nested deeper than 200"):
            store()
        assert cache.to_plain() == {"l": []}


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES | st.lists(JSON_VALUES) | st.dictionaries(KEYS, JSON_VALUES))
def test_a_stored_value_is_its_canonical_json(value):
    cache = DataCache()
    cache.persistent["v"] = value
    (change,) = cache.take_changes()
    assert change.text == canonical_json({"op": "add", "path": "/v", "value": value})
    assert same_json(cache.to_plain()["v"], value)
