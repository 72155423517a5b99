"""Canonical JSON and SHA-256: the only place installengine makes hashes.

Hashes are only comparable if every writer serialises the same value to the same
bytes, so canonicalisation is one function: sorted keys, no whitespace, UTF-8.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import UsageError

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

# orjson refuses integers outside 64 bits; JSON numbers beyond that lose precision
# in most readers anyway, so we refuse them with a path instead of a bare TypeError.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
MAX_DEPTH = 200


def check_json(value: Any, path: str = "") -> None:
    """Refuse anything that is not plain JSON, naming the path of the first offender.

    NaN and infinities are refused because canonical JSON cannot represent them
    (orjson would silently write ``null``, which would change the value).

    :raises UsageError: when ``value`` holds a non-JSON value.
    """
    if _is_plain(value):
        return
    # Something needs a closer look (or is wrong): walk again, keeping paths for the message.
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UsageError(f"value at {shown(where)} is nested deeper than {MAX_DEPTH} levels")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            _check_utf8(item, where)
            continue
        if isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise UsageError(
                    f"value at {shown(where)} is an integer outside 64 bits; store it as a string"
                )
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise UsageError(f"value at {shown(where)} is {item}, not JSON; use null or a string")
            continue
        if isinstance(item, Mapping) and isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise UsageError(
                        f"key {key!r} at {shown(where)} is a {type(key).__name__}, not a string"
                    )
                _check_utf8(key, where, is_key=True)
                stack.append((child, f"{where}/{_escape(key)}", depth + 1))
            continue
        if isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, f"{where}/{index}", depth + 1))
            continue
        raise UsageError(
            f"value at {shown(where)} is a {type(item).__name__}, not JSON; "
            "convert it to str, int, float, bool, None, list or dict"
        )


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON made only of the exact built-in types; False means "look closer".

    The fast path of :func:`check_json`: it builds no paths, and anything unusual
    (a subclass, a non-ASCII string, a deep nest) is left to the careful walk.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return False
        elif kind is dict:
            if depth >= MAX_DEPTH:
                return False
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append((child, depth + 1))
        elif kind is list:
            if depth >= MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _check_utf8(text: str, where: str, *, is_key: bool = False) -> None:
    """Refuse a string with a lone surrogate: it has no UTF-8 form, so no JSON text."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        what = f"key {text!r} at {shown(where)}" if is_key else f"value at {shown(where)}"
        raise UsageError(
            f"{what} holds an unpaired surrogate {text[err.start]!r}, not UTF-8; "
            "decode the bytes it came from properly"
        ) from err


def shown(path: str) -> str:
    """A path as an error message shows it: ``/`` for the root, control characters escaped.

    Keys may hold newlines; a message must stay on one line.
    """
    if not path:
        return "/"
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in path)


def _escape(key: str) -> str:
    """Escape a key as a JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON bytes (sorted keys, compact, UTF-8).

    This is the fast path and does not walk the value: orjson writes NaN and
    infinities as ``null`` and accepts datetimes, tuples and dataclasses. Values
    from outside must pass :func:`check_json` first, as ``EventLog.append`` does.

    :raises UsageError: when orjson cannot serialise ``value``.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as err:
        check_json(value)  # names the path of the offending value
        raise UsageError(f"value is not JSON: {err}") from err


@dataclass(frozen=True, slots=True)
class CheckedJSON:
    """Event data already checked and serialised by its producer: ``text`` is its canonical JSON.

    The data cache checks every value as it is set and keeps its canonical JSON;
    handing both to :meth:`EventLog.append_many` this way spares the log a second
    walk over a change that may be the whole 10 MB state. The producer vouches
    that ``text`` is ``canonical_json(value)``; the log hashes and stores ``text``.
    """

    value: Any
    text: bytes


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


HASHED_FIELDS = ("seq", "session", "ts", "kind", "checkpoint", "data", "prev_hash")


def event_hash(
    *,
    seq: int,
    session: str,
    ts: str,
    kind: str,
    checkpoint: str | None,
    data_json: str,
    prev_hash: str,
) -> str:
    """Hash of one event: SHA-256 over canonical JSON of every column but ``hash``.

    ``data`` is hashed as the exact JSON text stored in the column, so verification
    never depends on re-serialising a parsed value the same way.
    """
    fields: Mapping[str, object] = {
        "seq": seq,
        "session": session,
        "ts": ts,
        "kind": kind,
        "checkpoint": checkpoint,
        "data": data_json,
        "prev_hash": prev_hash,
    }
    return sha256_hex(canonical_json(fields))


GENESIS_HASH = "0" * 64
