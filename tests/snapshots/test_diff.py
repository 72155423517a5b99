"""diff() and apply(): JSON Patch between cache states, applied in place."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from installengine.eventlog import UsageError, canonical_json
from installengine.snapshots import apply, diff
from installengine.snapshots.diff import parse_pointer, pointer

#: text as JSON can hold it: no lone surrogates
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
#: keys that exercise JSON Pointer escaping
KEYS = TEXT | st.sampled_from(["", "~", "/", "~1", "a/b", "~0/", "0", "-"])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25)
JSON_OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=6)


def same_json(a: object, b: object) -> bool:
    """Equal as JSON, not just under Python's ``==`` (where 1 == 1.0 == True)."""
    return canonical_json(a) == canonical_json(b)


@given(JSON_VALUES, JSON_VALUES)
def test_apply_of_diff_turns_a_into_b(a, b):
    patch = diff(a, b)
    assert same_json(apply(copy.deepcopy(a), patch), b)


@given(JSON_OBJECTS, JSON_OBJECTS)
def test_diff_of_objects_round_trips_and_is_itself_json(a, b):
    patch = diff(a, b)
    canonical_json(patch)  # a patch goes into the log, so it must be JSON
    assert same_json(apply(copy.deepcopy(a), patch), b)


@given(JSON_VALUES)
def test_diff_of_equal_values_is_empty(a):
    assert diff(a, copy.deepcopy(a)) == []


@pytest.mark.parametrize(("a", "b"), [
    ({"a": 1}, {"a": True}),
    ({"a": 1}, {"a": 1.0}),
    ([0], [False]),
    ({"x": 0.0}, {"x": -0.0}),
])
def test_diff_tells_apart_values_python_calls_equal(a, b):
    assert same_json(apply(copy.deepcopy(a), diff(a, b)), b)


def test_apply_edits_the_state_in_place():
    state = {"a": {"b": [1, 2]}}
    result = apply(state, [{"op": "add", "path": "/a/b/1", "value": 9},
                           {"op": "add", "path": "/a/c", "value": None},
                           {"op": "remove", "path": "/a/b/0"}])
    assert result is state
    assert state == {"a": {"b": [9, 2], "c": None}}


def test_apply_replaces_the_whole_document():
    assert apply({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}


def test_apply_appends_with_dash():
    assert apply({"l": [1]}, [{"op": "add", "path": "/l/-", "value": 2}]) == {"l": [1, 2]}


def test_apply_hands_other_operations_to_jsonpatch():
    state = {"a": 1, "b": {}}
    result = apply(state, [{"op": "move", "from": "/a", "path": "/b/a"},
                           {"op": "copy", "from": "/b", "path": "/c"},
                           {"op": "test", "path": "/c/a", "value": 1}])
    assert result == {"b": {"a": 1}, "c": {"a": 1}}


@pytest.mark.parametrize(("state", "op"), [
    ({}, {"op": "remove", "path": ""}),
    ({}, {"op": "remove", "path": "/missing"}),
    ({}, {"op": "replace", "path": "/missing", "value": 1}),
    ({"l": []}, {"op": "add", "path": "/l/1", "value": 1}),
    ({"l": []}, {"op": "replace", "path": "/l/0", "value": 1}),
    ({"l": [1]}, {"op": "add", "path": "/l/x", "value": 1}),
    ({"s": "text"}, {"op": "add", "path": "/s/x", "value": 1}),
    ({}, {"op": "add", "path": "/a/b", "value": 1}),
    ({}, {"op": "add", "path": "no-slash", "value": 1}),
])
def test_a_patch_that_does_not_fit_raises_usage_error(state, op):
    with pytest.raises(UsageError):
        apply(state, [op])


@given(st.lists(KEYS | st.integers(0, 99), max_size=5))
def test_pointer_round_trips_through_parse_pointer(path):
    assert parse_pointer(pointer(tuple(path))) == [str(p) for p in path]


def test_pointer_escapes_tilde_before_slash():
    assert pointer(("a/b", "~1")) == "/a~1b/~01"
    assert parse_pointer("/a~1b/~01") == ["a/b", "~1"]
