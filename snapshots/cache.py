"""The data cache: a persistent JSON tree whose every change is recorded, and a volatile one.

Values handed out are *tracked views*: reading through them is free, and
writing through them is recorded as a JSON Patch operation at the moment it
happens. A change can therefore never be lost behind the cache's back, and a
snapshot point costs the size of the change, not the size of the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, MutableSequence
from dataclasses import dataclass
from typing import Any, overload

import orjson
from installengine.eventlog import CheckedJSON, UsageError, canonical_json, check_json
from installengine.eventlog.hashing import MAX_DEPTH, shown

from .diff import Patch, pointer
from .digest import DigestTree

Path = tuple[str | int, ...]


@dataclass(slots=True)
class PendingChange:
    """One recorded operation, with who made it (a checkpoint name, or None for the application).

    ``text`` is the operation's canonical JSON, made from the value's when it was
    checked at set time, so that recording it costs no second walk.
    """

    op: dict[str, Any]
    actor: str | None
    size: int
    text: bytes


def _op(op: str, ptr: str, raw: bytes | None, actor: str | None) -> PendingChange:
    """An operation with its canonical JSON (its keys op, path, value are in sorted order)."""
    entry: dict[str, Any] = {"op": op, "path": ptr}
    text = b'{"op":' + orjson.dumps(op) + b',"path":' + orjson.dumps(ptr)
    if raw is not None:
        entry["value"] = orjson.loads(raw)
        text += b',"value":' + raw
    return PendingChange(entry, actor, len(raw or b"") + 16, text + b"}")


def change_data(changes: list[PendingChange], actor: str | None, base: int | None) -> CheckedJSON:
    """The data of the ``cache-changed`` event that records ``changes``, already serialised."""
    by = actor or "application"
    value = {"patch": [c.op for c in changes], "by": by, "base": base}
    text = (b'{"base":' + orjson.dumps(base) + b',"by":' + orjson.dumps(by) + b',"patch":['
            + b",".join(c.text for c in changes) + b"]}")
    return CheckedJSON(value, text)


def _encode(value: Any, where: str) -> tuple[bytes, Any]:
    """Canonical JSON of a value being stored, and the plain copy to store; non-JSON is refused.

    The fast path lets orjson serialise the value and checks that parsing the text
    gives the value back: NaN, a datetime, a tuple, a bytes or an Enum member does
    not survive that, nor does orjson take a huge int, a non-string key, a lone
    surrogate or a cache view. Those, and values nested too deep, take the careful
    path, which either converts them (views and tuples) or names the culprit.
    """
    if type(value) is dict or type(value) is list:
        try:
            raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            pass
        else:
            stored = orjson.loads(raw)
            if stored == value and _within_depth(stored):
                return raw, stored
    try:
        plain = _unwrap(value)
    except RecursionError:
        # _unwrap recurses, so a value nested a thousand deep, or one holding itself, ends
        # here before check_json could name it.
        raise UsageError(f"value at {shown(where or '/')} is nested too deeply or contains itself; "
                         "store a flatter value") from None
    check_json(plain, where)
    raw = canonical_json(plain)
    return raw, orjson.loads(raw)


def _within_depth(value: dict[str, Any] | list[Any]) -> bool:
    """Whether nothing in ``value`` lies deeper than check_json allows (the root is depth 0)."""
    level: list[Any] = [value]
    depth = 0
    while level:
        children = [c for v in level for c in (v.values() if type(v) is dict else v)]
        if children and depth >= MAX_DEPTH:
            return False
        level = [c for c in children if type(c) is dict or type(c) is list]
        depth += 1
    return True


def _unwrap(value: Any) -> Any:
    if isinstance(value, (CacheDict, CacheList)):
        return value.to_plain()
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unwrap(v) for v in value]
    return value


class DataCache:
    """The persistent and volatile roots of an engine's data cache.

    ``persistent`` is logged, snapshotted and rolled back; ``volatile`` is a plain
    dict that lives in memory only.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = state if state is not None else {}
        self._tree = DigestTree(self._data)
        self._pending: list[PendingChange] = []
        self.volatile: dict[str, Any] = {}
        #: who changes the cache now: a checkpoint name while it runs, else None
        self.actor: str | None = None

    @property
    def persistent(self) -> CacheDict:
        return CacheDict(self, ())

    def digest(self) -> str:
        """The state digest of the persistent root (cheap: kept up to date incrementally)."""
        return self._tree.hexdigest()

    def to_plain(self) -> dict[str, Any]:
        """A deep, independent copy of the persistent root."""
        result: dict[str, Any] = orjson.loads(orjson.dumps(self._data))
        return result

    def dumps(self) -> bytes:
        """Canonical JSON of the persistent root, for a snapshot file."""
        return canonical_json(self._data)

    def take_changes(self) -> list[PendingChange]:
        """Hand over the changes recorded since the last call, oldest first."""
        changes, self._pending = self._pending, []
        return changes

    def untake(self, changes: list[PendingChange]) -> None:
        """Put back changes that could not be recorded (the log append failed)."""
        self._pending[:0] = changes

    def record_whole(self) -> None:
        """Record the whole root as one change, so the next point needs no earlier one."""
        self._pending = [_op("replace", "", canonical_json(self._data), self.actor)]

    @property
    def pending_size(self) -> int:
        return sum(c.size for c in self._pending)

    def digest_sums(self) -> list[list[Any]] | None:
        """The digest tree's sums, recorded with a snapshot file so loading it need not rebuild the tree."""
        return self._tree.sums()

    def restore(self, state: dict[str, Any], tree: DigestTree | None = None) -> None:
        """Replace the persistent root (a rollback); pending changes are discarded."""
        self._data = state
        self._tree = tree if tree is not None else DigestTree(state)
        self._pending = []

    # -- primitive edits, used by the views ---------------------------------------------

    def _resolve(self, path: Path) -> Any:
        node: Any = self._data
        try:
            for key in path:
                node = node[key]
        except (KeyError, IndexError, TypeError):
            raise UsageError(f"cache path {shown(pointer(path))} no longer exists") from None
        return node

    def _record(self, op: str, path: Path, raw: bytes | None) -> None:
        self._pending.append(_op(op, pointer(path), raw, self.actor))

    def _set(self, path: Path, key: str | int, value: Any) -> None:
        if isinstance(path, tuple) and not path and not isinstance(key, str):
            raise UsageError(f"cache keys are strings, not {type(key).__name__}: {key!r}")
        container = self._resolve(path)
        if isinstance(container, dict):
            if not isinstance(key, str):
                raise UsageError(f"key {key!r} at {shown(pointer(path))} is not a string")
            # The key is JSON too: one without a UTF-8 form (a lone surrogate) would be
            # stored, then break the digest and every later snapshot point.
            check_json({key: None}, pointer(path))
            op = "add"
        else:
            if not isinstance(key, int) or not -len(container) <= key < len(container):
                raise UsageError(f"index {key!r} is out of range at {shown(pointer(path))}")
            key = key % len(container)
            op = "replace"
        # Encode after normalising the key, so a refusal names the index as stored (/l/2, not /l/-1).
        raw, stored = _encode(value, pointer((*path, key)))
        self._tree.before_change(self._data, path, key)
        container[key] = stored
        self._record(op, (*path, key), raw)
        self._tree.changed(self._data, path, key)

    def _delete(self, path: Path, key: str | int) -> None:
        container = self._resolve(path)
        if isinstance(container, list):
            if not isinstance(key, int) or not -len(container) <= key < len(container):
                raise IndexError(key)
            key = key % len(container)
            self._tree.before_shift(self._data, path, key)
            del container[key]
            self._record("remove", (*path, key), None)
            self._tree.shifted(self._data, path, key)
        else:
            if key not in container:
                raise KeyError(key)
            self._tree.before_change(self._data, path, key)
            del container[key]
            self._record("remove", (*path, key), None)
            self._tree.changed(self._data, path, key)

    def _insert(self, path: Path, index: int, value: Any) -> None:
        container = self._resolve(path)
        index = max(0, min(len(container), index if index >= 0 else len(container) + index))
        raw, stored = _encode(value, pointer((*path, index)))
        self._tree.before_shift(self._data, path, index)
        container.insert(index, stored)
        self._record("add", (*path, index), raw)
        self._tree.shifted(self._data, path, index)


def _copy(value: Any) -> Any:
    """A deep, independent copy of a stored JSON value."""
    return orjson.loads(orjson.dumps(value)) if isinstance(value, (dict, list)) else value


def _view(cache: DataCache, path: Path, value: Any) -> Any:
    if isinstance(value, dict):
        return CacheDict(cache, path, value)
    if isinstance(value, list):
        return CacheList(cache, path, value)
    return value


def _resolve_view(cache: DataCache, path: Path, of: Any) -> Any:
    """The container a view stands for; a view whose container went is refused.

    Views hold a path, so without this check a view of an element that an
    insert moved would read and write the element now at its old index. ``of``
    is the container the view was read from (None for the root, which follows
    rollbacks).
    """
    try:
        node = cache._resolve(path)
    except UsageError:
        raise _stale(path) from None
    if of is not None and node is not of:
        raise _stale(path)
    return node


def _stale(path: Path) -> UsageError:
    return UsageError(f"this view of cache path {shown(pointer(path))} is stale: the value it "
                      "was read from has been replaced, removed or moved (an insert or delete "
                      "before it, or a rollback); read it again from the cache")


class CacheDict(MutableMapping[str, Any]):
    """A tracked view of a JSON object inside the persistent cache."""

    __slots__ = ("_cache", "_of", "_path")

    def __init__(self, cache: DataCache, path: Path, of: Any = None) -> None:
        self._cache = cache
        self._path = path
        #: the stored container this view was read from (None: the root, whatever it is)
        self._of = of

    def _node(self) -> dict[str, Any]:
        node = _resolve_view(self._cache, self._path, self._of)
        if not isinstance(node, dict):
            raise UsageError(f"cache path {shown(pointer(self._path))} is no longer an object")
        return node

    def __getitem__(self, key: str) -> Any:
        return _view(self._cache, (*self._path, key), self._node()[key])

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise UsageError(f"cache keys are strings; got {type(key).__name__} {key!r} at "
                             f"{shown(pointer(self._path))}")
        self._node()
        self._cache._set(self._path, key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self._node():
            raise KeyError(key)
        self._cache._delete(self._path, key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._node()))

    def __len__(self) -> int:
        return len(self._node())

    def __contains__(self, key: object) -> bool:
        return key in self._node()

    # The MutableMapping mixins would return ``default`` itself from setdefault (so
    # edits through it were lost) and views of removed paths from pop and popitem.

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``cache[key]``, set to ``default`` first if missing; returns the tracked view."""
        if key not in self._node():
            self[key] = default
        return self[key]

    def pop(self, key: str, /, *default: Any) -> Any:
        """Remove ``key`` and return a plain copy of its value (or ``default``)."""
        node = self._node()
        if key not in node:
            if default:
                return default[0]
            raise KeyError(key)
        value = _copy(node[key])
        self._cache._delete(self._path, key)
        return value

    def popitem(self) -> tuple[str, Any]:
        """Remove the last key and return it with a plain copy of its value."""
        node = self._node()
        if not node:
            raise KeyError("popitem(): the cache object is empty")
        key = next(reversed(node))
        return key, self.pop(key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CacheDict, CacheList)):
            other = other.to_plain()
        return self._node() == other

    __hash__ = None  # type: ignore[assignment]

    def to_plain(self) -> dict[str, Any]:
        """A deep, independent copy."""
        result: dict[str, Any] = orjson.loads(orjson.dumps(self._node()))
        return result

    def __repr__(self) -> str:
        return f"CacheDict({self._node()!r})"


class CacheList(MutableSequence[Any]):
    """A tracked view of a JSON array inside the persistent cache."""

    __slots__ = ("_cache", "_of", "_path")

    def __init__(self, cache: DataCache, path: Path, of: Any = None) -> None:
        self._cache = cache
        self._path = path
        #: the stored container this view was read from (None: the root, whatever it is)
        self._of = of

    def _node(self) -> list[Any]:
        node = _resolve_view(self._cache, self._path, self._of)
        if not isinstance(node, list):
            raise UsageError(f"cache path {shown(pointer(self._path))} is no longer an array")
        return node

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        node = self._node()
        if isinstance(index, slice):
            # A slice holds the items' views, as a list slice holds references to them:
            # changing an item of the slice changes the cache, and is recorded.
            return [_view(self._cache, (*self._path, i), node[i])
                    for i in range(*index.indices(len(node)))]
        value = node[index]
        return _view(self._cache, (*self._path, index % len(node)), value)

    @overload
    def __setitem__(self, index: int, value: Any) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Any) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            raise UsageError("slice assignment into the cache is not supported; set items one by one")
        self._node()
        self._cache._set(self._path, index, value)

    @overload
    def __delitem__(self, index: int) -> None: ...
    @overload
    def __delitem__(self, index: slice) -> None: ...
    def __delitem__(self, index: int | slice) -> None:
        if isinstance(index, slice):
            for i in sorted(range(*index.indices(len(self._node()))), reverse=True):
                self._cache._delete(self._path, i)
            return
        self._node()
        self._cache._delete(self._path, index)

    def __len__(self) -> int:
        return len(self._node())

    def insert(self, index: int, value: Any) -> None:
        self._node()
        self._cache._insert(self._path, index, value)

    # The MutableSequence mixins would return a view of the index that the next
    # element moves into from pop, and read views already overwritten in reverse.

    def pop(self, index: int = -1) -> Any:
        """Remove the item at ``index`` and return a plain copy of it."""
        value = _copy(self._node()[index])
        self._cache._delete(self._path, index)
        return value

    def reverse(self) -> None:
        """Reverse in place, recorded as one replacement per index."""
        for i, value in enumerate(reversed(self.to_plain())):
            self._cache._set(self._path, i, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CacheDict, CacheList)):
            other = other.to_plain()
        return self._node() == other

    __hash__ = None  # type: ignore[assignment]

    def to_plain(self) -> list[Any]:
        """A deep, independent copy."""
        result: list[Any] = orjson.loads(orjson.dumps(self._node()))
        return result

    def __repr__(self) -> str:
        return f"CacheList({self._node()!r})"


def patch_of(changes: list[PendingChange]) -> Patch:
    return [c.op for c in changes]
