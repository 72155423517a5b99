"""The incremental state digest: DigestTree after any edits equals state_digest from scratch."""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from installengine.eventlog import canonical_json
from installengine.snapshots import DataCache, DigestTree, state_digest
from installengine.snapshots import digest as digest_module

from .test_cache import random_edit
from .test_diff import JSON_OBJECTS, JSON_VALUES


@contextlib.contextmanager
def pack_limit(limit: int) -> Iterator[None]:
    """Run with another packing limit, so small values cross it both ways."""
    saved = digest_module.PACK_LIMIT
    digest_module.PACK_LIMIT = limit
    try:
        yield
    finally:
        digest_module.PACK_LIMIT = saved


@pytest.mark.parametrize("limit", [256, 0, 1, 2, 5])
@settings(max_examples=40, deadline=None)
@given(start=JSON_OBJECTS, data=st.data())
def test_digest_tree_after_random_edits_equals_digest_from_scratch(limit, start, data):
    with pack_limit(limit):
        cache = DataCache(copy.deepcopy(start))
        shadow = copy.deepcopy(start)
        assert cache.digest() == state_digest(shadow)
        for _ in range(data.draw(st.integers(1, 10), label="edits")):
            what = random_edit(data, cache, shadow)
            assert cache.digest() == state_digest(shadow), what
            assert DigestTree(cache.to_plain()).hexdigest() == cache.digest(), what


@given(JSON_OBJECTS)
def test_digest_does_not_depend_on_key_order(value):
    reordered = dict(reversed(list(value.items())))
    assert state_digest(reordered) == state_digest(value)


@given(JSON_VALUES)
def test_digest_survives_a_json_round_trip(value):
    assert state_digest(orjson.loads(canonical_json(value))) == state_digest(value)


@given(JSON_OBJECTS, JSON_OBJECTS)
def test_different_values_have_different_digests(a, b):
    if canonical_json(a) != canonical_json(b):
        assert state_digest(a) != state_digest(b)


@pytest.mark.parametrize(("a", "b"), [
    ({"a": 1}, {"a": True}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 0}, {"a": False}),
    ({"a": None}, {}),
    ({"a": []}, {"a": {}}),
    ({"a": [1]}, {"a": {"0": 1}}),
    ({"a": "1"}, {"a": 1}),
    ({"a": [[]]}, {"a": [{}]}),
    ({"a": [1, [2]]}, {"a": [[2], 1]}),
    ({"ab": {"c": 1}}, {"a": {"bc": 1}}),
    ({"a": list(range(256))}, {"a": list(range(257))}),
    ({"a": {str(i): i for i in range(300)}}, {"a": {str(i): i for i in range(299)}}),
])
def test_values_python_may_confuse_have_different_digests(a, b):
    assert state_digest(a) != state_digest(b)


def test_digest_is_lowercase_hex_sha256():
    d = state_digest({"a": 1})
    assert len(d) == 64
    assert d == d.lower()
    int(d, 16)


def test_a_small_container_of_scalars_is_one_leaf():
    # The packed form: sha256("J" + canonical JSON), so it can be checked by hand.
    leaf = hashlib.sha256(b"J" + canonical_json([1, 2, 3])).digest()
    assert isinstance(digest_module._build([1, 2, 3]), digest_module._PackedLeaf)
    assert digest_module._build([1, 2, 3]) == leaf


@pytest.mark.parametrize("size", [255, 256, 257, 300])
def test_crossing_the_packing_limit_both_ways(size):
    cache = DataCache({"l": list(range(size - 2)), "d": {f"k{i}": i for i in range(size - 2)}})
    for i in range(size - 2, size + 2):
        cache.persistent["l"].append(i)
        cache.persistent["d"][f"k{i}"] = i
        assert cache.digest() == state_digest(cache.to_plain())
    for _ in range(6):
        cache.persistent["l"].pop(0)
        cache.persistent["d"].popitem()
        assert cache.digest() == state_digest(cache.to_plain())


def test_a_container_turning_scalar_only_is_repacked():
    cache = DataCache({"a": {"b": {"c": 1}, "d": 2}})
    del cache.persistent["a"]["b"]
    assert cache.digest() == state_digest({"a": {"d": 2}})
    cache.persistent["a"]["e"] = [{"f": 1}]
    assert cache.digest() == state_digest({"a": {"d": 2, "e": [{"f": 1}]}})
    cache.persistent["a"]["e"][0] = 3
    assert cache.digest() == state_digest({"a": {"d": 2, "e": [3]}})


def test_an_edit_rebuilds_the_changed_path_only():
    # A 1 MB cache: an edit deep inside replaces the entries on its path and reuses every
    # other subtree as it was, so its cost is the change's, not the cache's.
    big = {f"k{i}": {"v": list(range(64)), "s": "x" * 100, "n": {"deep": [1, {"x": i}]}}
           for i in range(4000)}
    cache = DataCache(big)
    root = cache._tree._root
    before = dict(root.children)
    nested_before = dict(before["k17"].children)
    cache.persistent["k17"]["n"]["deep"].append(2)
    assert cache.digest() == state_digest(cache.to_plain())
    after = root.children
    assert all(after[k] is before[k] for k in before if k != "k17")
    assert after["k17"] is before["k17"]  # the node is updated in place, not rebuilt
    assert all(after["k17"].children[k] is nested_before[k] for k in ("v", "s"))


@contextlib.contextmanager
def every_node_summed() -> Iterator[None]:
    """Record every node's sums, so a partial tree has partial nodes at every depth."""
    saved = digest_module.SUMS_MIN_WEIGHT
    digest_module.SUMS_MIN_WEIGHT = -1
    try:
        yield
    finally:
        digest_module.SUMS_MIN_WEIGHT = saved


@pytest.mark.parametrize("limit", [256, 0, 2])
@settings(max_examples=40, deadline=None)
@given(start=JSON_OBJECTS, data=st.data())
def test_a_tree_from_sums_after_random_edits_equals_digest_from_scratch(limit, start, data):
    # A partial tree knows only the recorded nodes' sums; each edit must first teach it the
    # entries it replaces, or its digest drifts from the value's.
    with pack_limit(limit), every_node_summed():
        sums = orjson.loads(orjson.dumps(DigestTree(start).sums()))
        state = copy.deepcopy(start)
        cache = DataCache({})
        cache.restore(state, DigestTree.from_sums(state, sums))
        shadow = copy.deepcopy(start)
        assert cache.digest() == state_digest(shadow)
        for _ in range(data.draw(st.integers(1, 10), label="edits")):
            what = random_edit(data, cache, shadow)
            assert cache.digest() == state_digest(shadow), what
        again = DigestTree.from_sums(cache.to_plain(), cache.digest_sums())
        assert again.hexdigest() == cache.digest()


def test_a_tree_from_sums_hashes_only_what_an_edit_touches():
    big = {"payload": {f"pkg{i:05d}": {"v": f"1.{i}", "path": f"/opt/p{i}"} for i in range(5000)},
           "log": [f"line {i}" for i in range(1000)]}
    sums = DigestTree(big).sums()
    assert sums is not None
    assert len(sums) == 3
    tree = DigestTree.from_sums(big, sums)
    payload = tree._root.children["payload"]
    assert payload.partial
    assert payload.children == {}
    tree.before_change(big, ("payload",), "pkg00042")
    big["payload"]["pkg00042"] = {"v": "2.0"}
    tree.changed(big, ("payload",), "pkg00042")
    assert list(payload.children) == ["pkg00042"]
    tree.before_shift(big, ("log",), 1000)
    big["log"].append("one more")
    tree.shifted(big, ("log",), 1000)
    assert sum(c is not None for c in tree._root.children["log"].children) == 1
    assert tree.hexdigest() == state_digest(big)


@pytest.mark.parametrize("sums", [
    None, [], "x", [[[], True, 1, 0, "00"]], [[["nope"], True, 0, 0, "0" * 64]],
    [[[], True, 2, 0, "0" * 64]],                     # the wrong size
    [[[], False, 1, 0, "0" * 64]],                     # a list where the value has a dict
    [[["a"], False, 1, 0, "0" * 64]],                  # no root
    [[[], True, 1, 0, "0" * 64], [[], True, 1, 0, "0" * 64]],
])
def test_sums_that_do_not_fit_the_value_are_refused(sums):
    with pytest.raises(ValueError):
        DigestTree.from_sums({"a": [1]}, sums)
