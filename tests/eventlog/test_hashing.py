"""Canonical JSON, check_json and the event hash."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from installengine.eventlog import EngineError, UsageError, canonical_json, check_json, sha256_hex
from installengine.eventlog.hashing import GENESIS_HASH, HASHED_FIELDS, event_hash

INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def json_values(*, floats: bool = True) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | INTS | st.text(max_size=12)
    if floats:
        scalars = scalars | FLOATS
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=25,
    )


def reordered(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's keys inserted in a shuffled order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {key: reordered(value[key], rnd) for key in keys}
    if isinstance(value, list):
        return [reordered(item, rnd) for item in value]
    return value


@given(value=json_values(), rnd=st.randoms(use_true_random=False))
def test_canonical_json_does_not_depend_on_key_order(value: Any, rnd: random.Random) -> None:
    shuffled = reordered(value, rnd)
    assert canonical_json(shuffled) == canonical_json(value)


@given(value=json_values(floats=False))
def test_canonical_json_is_sorted_compact_utf8(value: Any) -> None:
    # The standard library, told the same rules, is an independent reference.
    # (Floats are left out: the two libraries spell exponents differently.)
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == reference.encode("utf-8")


@given(value=json_values())
def test_canonical_json_round_trips_exactly(value: Any) -> None:
    assert json.loads(canonical_json(value)) == value


@given(value=json_values())
def test_check_json_accepts_every_json_value(value: Any) -> None:
    check_json(value)


@given(a=json_values(), b=json_values())
def test_different_values_have_different_canonical_json(a: Any, b: Any) -> None:
    # Bools are ints in Python (True == 1), but not in JSON; compare as JSON sees them.
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (canonical_json(a) == canonical_json(b)) == same


@dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"disk": {"dev": PurePosixPath("/dev/sda")}}, "/disk/dev", "PurePosixPath"),
        ({"a": [1, 2, {"b": object()}]}, "/a/2/b", "object"),
        ({"ratio": math.nan}, "/ratio", "nan"),
        ({"ratio": -math.inf}, "/ratio", "-inf"),
        ([0, math.inf], "/1", "inf"),
        ({"a/b": {"c~d": {1, 2}}}, "/a~1b/c~0d", "set"),
        ({"t": (1, 2)}, "/t", "tuple"),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "/when", "datetime"),
        ({"big": 2**64}, "/big", "64 bits"),
        ({"small": -(2**63) - 1}, "/small", "64 bits"),
        ({"p": _Point(1)}, "/p", "_Point"),
        (b"raw", "/", "bytes"),
        ({"name": "caf\udce9"}, "/name", "unpaired surrogate '\\udce9'"),
    ],
)
def test_check_json_names_the_path_of_the_offender(value: Any, path: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_json(value)
    message = str(caught.value)
    assert f"at {path} " in message
    assert words in message
    assert "\n" not in message


def test_check_json_names_a_non_string_key() -> None:
    with pytest.raises(UsageError, match=r"key 3 at /outer is a int, not a string"):
        check_json({"outer": {3: "x"}})


def test_check_json_names_a_key_that_is_not_utf8() -> None:
    with pytest.raises(UsageError, match=r"key 'x\\udc80' at /outer holds an unpaired surrogate"):
        check_json({"outer": {"x\udc80": 1}})


def test_check_json_prefixes_the_given_path() -> None:
    with pytest.raises(UsageError, match=r"at persistent/disks/0 "):
        check_json([object()], "persistent/disks")


def test_check_json_refuses_deep_nesting_without_recursion_error() -> None:
    value: Any = "leaf"
    for _ in range(10_000):
        value = [value]
    with pytest.raises(UsageError, match="nested deeper than"):
        check_json(value)


def test_canonical_json_refuses_a_non_json_type_with_its_path() -> None:
    with pytest.raises(UsageError, match=r"at /k "):
        canonical_json({"k": object()})


def test_usage_error_is_an_engine_error() -> None:
    assert issubclass(UsageError, EngineError)


def test_sha256_hex_is_lowercase_hex_sha256() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert GENESIS_HASH == "0" * 64


FIELDS = {
    "seq": 7,
    "session": "3f2a00c0ffee",
    "ts": "2026-01-01T00:00:00.000001+00:00",
    "kind": "checkpoint-completed",
    "checkpoint": "partition",
    "data_json": '{"a":1}',
    "prev_hash": "ab" * 32,
}


def test_event_hash_is_sha256_of_canonical_json_of_every_column_but_hash() -> None:
    by_column = {("data" if k == "data_json" else k): v for k, v in FIELDS.items()}
    assert tuple(sorted(by_column)) == tuple(sorted(HASHED_FIELDS))
    text = json.dumps(by_column, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert event_hash(**FIELDS) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "other"),
    [("seq", 8), ("session", "3f2a00c0ffef"), ("ts", "2026-01-01T00:00:00.000002+00:00"),
     ("kind", "checkpoint-failed"), ("checkpoint", None), ("checkpoint", "partitioN"),
     ("data_json", '{"a": 1}'), ("prev_hash", "ab" * 31 + "ac")],
)
def test_event_hash_changes_with_every_field(field: str, other: Any) -> None:
    changed = {**FIELDS, field: other}
    assert event_hash(**changed) != event_hash(**FIELDS)  # type: ignore[arg-type]


def test_event_hash_hashes_data_as_its_text() -> None:
    # Same parsed value, different text: a re-serialisation could not hide a change.
    spaced = {**FIELDS, "data_json": '{"a":1.0}'}
    assert event_hash(**spaced) != event_hash(**FIELDS)  # type: ignore[arg-type]
