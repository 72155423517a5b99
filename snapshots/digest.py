"""The state digest: a SHA-256 Merkle tree over a JSON value, updated incrementally.

A snapshot point records the digest of the persistent cache. Hashing the
canonical JSON of a 10 MB cache at every point would make a point cost the
size of the cache, not the size of the change, so the digest is a tree:

- a scalar, or a container of at most ``PACK_LIMIT`` scalars, is a *leaf*:
  ``sha256("J" + canonical_json(value))``;
- any other container is a *node*: ``sha256(tag + count + sum)``, where ``sum``
  adds up (mod 2**256) ``sha256("K" + key + child_digest)`` over its entries.

Adding a term per entry means changing one child costs one subtraction and one
addition at each level above it. The digest is a function of the value alone:
:func:`state_digest` computed from scratch equals what :class:`DigestTree`
arrives at through any sequence of edits.

Building the tree of a 10 MB value hashes every entry, which costs several
times parsing it. A snapshot file therefore records, in the log, the *sums* of
the tree's big nodes (:meth:`DigestTree.sums`); :meth:`DigestTree.from_sums`
turns them back into a *partial* tree that knows those nodes' sums but none of
their small children, and learns a child's digest from the value only when
an edit is about to replace it (:meth:`DigestTree.before_change`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

PACK_LIMIT = 256
#: a node goes into :meth:`DigestTree.sums` when its subtree holds more entries than this
SUMS_MIN_WEIGHT = 256
#: more recorded nodes than this, and a snapshot file records no sums (its tree is rebuilt)
SUMS_MAX_NODES = 4096
_MOD = 2**256
_MISSING: Any = object()


def _leaf(value: Any) -> bytes:
    return hashlib.sha256(b"J" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).digest()


class _PackedLeaf(bytes):
    """The digest of a small all-scalar container, hashed as one leaf."""


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_packable(value: dict[str, Any] | list[Any]) -> bool:
    if len(value) > PACK_LIMIT:
        return False
    items = value.values() if isinstance(value, dict) else value
    # The set of types is built in C; only a value of some other type needs a closer look.
    if _SCALARS.issuperset(map(type, items)):
        return True
    return not any(isinstance(v, (dict, list)) for v in items)


class _Node:
    """A container's entry in the tree.

    A *partial* node (from :meth:`DigestTree.from_sums`) knows its sum and size
    but only some children: a dict keeps the known ones, a list holds None for
    the others. Its unknown children are small subtrees, never recorded nodes.
    """

    __slots__ = ("_digest", "acc", "children", "containers", "count", "is_dict", "partial")

    def __init__(self, is_dict: bool) -> None:
        self.is_dict = is_dict
        self.children: Any = {} if is_dict else []
        self.acc = 0
        self.containers = 0
        self.partial = False
        #: the number of entries of a partial dict, whose ``children`` holds only the known ones
        self.count = 0
        self._digest: bytes | None = None

    def size(self) -> int:
        return self.count if self.partial and self.is_dict else len(self.children)

    def digest(self) -> bytes:
        if self._digest is None:
            tag = b"D" if self.is_dict else b"A"
            self._digest = hashlib.sha256(
                tag + self.size().to_bytes(8, "big") + self.acc.to_bytes(32, "big")).digest()
        return self._digest

    def term(self, key: str | int, child_digest: bytes) -> int:
        kb = key.encode() if isinstance(key, str) else key.to_bytes(8, "big")
        h = hashlib.sha256(b"K" + len(kb).to_bytes(4, "big") + kb + child_digest).digest()
        return int.from_bytes(h, "big")


Child = bytes | _Node


def _digest_of(child: Child) -> bytes:
    return child.digest() if isinstance(child, _Node) else child


def _is_container(child: Child) -> bool:
    return isinstance(child, (_Node, _PackedLeaf))


def _build(value: Any, *, root: bool = False) -> Child:
    if not isinstance(value, (dict, list)):
        return _leaf(value)
    if not root and _is_packable(value):
        return _PackedLeaf(_leaf(value))
    # _Node.term, inlined: this loop runs once per entry of a 10 MB state.
    is_dict = isinstance(value, dict)
    node = _Node(is_dict)
    children = node.children
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    acc = containers = 0
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for key, v in items:
        child = _build(v)
        if is_dict:
            children[key] = child
            kb = key.encode()
        else:
            children.append(child)
            kb = key.to_bytes(8, "big")
        digest = child.digest() if type(child) is _Node else child
        acc += from_bytes(sha256(b"K" + len(kb).to_bytes(4, "big") + kb + digest).digest(), "big")
        containers += type(child) is not bytes
    node.acc = acc % _MOD
    node.containers = containers
    return node


def state_digest(value: Any) -> str:
    """Hex digest of ``value`` computed from scratch."""
    return _digest_of(_build(value, root=True)).hex()


class DigestTree:
    """The digest of a JSON value kept up to date as the value is edited.

    Callers edit the value first, then tell the tree which entry changed; the
    tree re-reads only that entry from the value.
    """

    def __init__(self, value: Any) -> None:
        self._root: Child = _build(value, root=True)
        self._partial = False

    @classmethod
    def from_sums(cls, value: Any, sums: Any) -> DigestTree:
        """The tree of ``value`` from the :meth:`sums` recorded with it, hashing nothing.

        The sums are trusted: use this only for a value whose bytes the log
        vouches for (a snapshot file whose SHA-256 it recorded with them).

        :raises ValueError: when ``sums`` is malformed or does not fit the shape of ``value``.
        """
        if not isinstance(sums, list) or not sums:
            raise ValueError("no sums")
        entries = sorted((_parse_sum(s) for s in sums), key=lambda e: len(e[0]))
        nodes: dict[tuple[str | int, ...], _Node] = {}
        for path, is_dict, size, containers, acc in entries:
            data = value
            for k in path:
                data = _member(data, k)
            if not isinstance(data, dict if is_dict else list) or len(data) != size:
                raise ValueError(f"the sums do not fit the value at {list(path)}")
            node = _Node(is_dict)
            node.partial, node.count, node.containers, node.acc = True, size, containers, acc
            if not is_dict:
                node.children = [None] * size
            if path:
                parent = nodes.get(path[:-1])
                if parent is None or path in nodes:
                    raise ValueError(f"the sums have no parent for {list(path)}, or it twice")
                parent.children[path[-1]] = node
            elif nodes:
                raise ValueError("the sums hold the root twice")
            nodes[path] = node
        if () not in nodes:
            raise ValueError("the sums hold no root")
        tree = cls.__new__(cls)
        tree._root, tree._partial = nodes[()], True
        return tree

    def sums(self) -> list[list[Any]] | None:
        """The sums of the nodes with big subtrees, as JSON, for :meth:`from_sums`.

        None when there are more than ``SUMS_MAX_NODES`` of them: a value of
        many mid-sized containers is cheaper to rebuild than to describe.
        """
        out: list[list[Any]] = []
        assert isinstance(self._root, _Node)
        _collect(self._root, [], out)
        return out if len(out) <= SUMS_MAX_NODES else None

    def hexdigest(self) -> str:
        return _digest_of(self._root).hex()

    def reset(self, value: Any) -> None:
        """Forget everything and build the tree of ``value`` (the whole value was replaced)."""
        self._root, self._partial = _build(value, root=True), False

    def before_change(self, value: Any, parent: tuple[str | int, ...], key: str | int) -> None:
        """Call before entry ``key`` at ``parent`` is set or removed, with ``value`` not yet edited.

        A partial tree learns the digests on the path it has not seen yet; a full
        tree knows them already, and this costs nothing.
        """
        if self._partial:
            self._learn(value, (*parent, key), tail=None)

    def before_shift(self, value: Any, parent: tuple[str | int, ...], index: int) -> None:
        """Call before an item is inserted into or removed from the list at ``parent``."""
        if self._partial:
            self._learn(value, parent, tail=index)

    def _learn(self, value: Any, path: tuple[str | int, ...], tail: int | None) -> None:
        node: Child | None = self._root
        data = value
        for k in path:
            if not isinstance(node, _Node):
                return
            if node.partial:
                _know(node, data, k)
            if not isinstance(data, (dict, list)):
                return
            node, data = _child(node, k), _lookup(data, k)
        if tail is not None and isinstance(node, _Node) and node.partial and not node.is_dict:
            for i in range(tail, len(node.children)):
                if node.children[i] is None:
                    node.children[i] = _build(data[i])

    def changed(self, value: Any, parent: tuple[str | int, ...], key: str | int) -> None:
        """Entry ``key`` of the container at ``parent`` in ``value`` was set or removed."""
        chain: list[tuple[_Node, str | int, bytes]] = []
        node = self._root
        path = (*parent, key)
        data = value
        for depth, k in enumerate(path):
            assert isinstance(node, _Node)
            is_last = depth == len(path) - 1
            child = _child(node, k)
            if is_last or not isinstance(child, _Node):
                new_value = _lookup(data, k)
                self._set_entry(node, k, child, new_value)
                break
            chain.append((node, k, child.digest()))
            node = child
            data = data[k]
        self._propagate(value, path, chain)

    def shifted(self, value: Any, parent: tuple[str | int, ...], index: int) -> None:
        """The list at ``parent`` had an item inserted or removed at ``index``."""
        chain: list[tuple[_Node, str | int, bytes]] = []
        node = self._root
        data = value
        for k in parent:
            assert isinstance(node, _Node)
            child = _child(node, k)
            if not isinstance(child, _Node):
                self._set_entry(node, k, child, _lookup(data, k))
                self._propagate(value, (*parent[: len(chain)], k), chain)
                return
            chain.append((node, k, child.digest()))
            node = child
            data = data[k]
        assert isinstance(node, _Node)
        assert not node.is_dict
        lst: list[Any] = data
        old = node.children
        for i in range(index, len(old)):
            node.acc -= node.term(i, _digest_of(old[i]))
            node.containers -= _is_container(old[i])
        # Reuse unchanged children: an insert shifts them right, a remove left.
        if len(lst) == len(old) + 1:
            tail = [_build(lst[index]), *old[index:]]
        elif len(lst) == len(old) - 1:
            tail = old[index + 1 :]
        else:
            tail = [_build(v) for v in lst[index:]]
        node.children = old[:index] + tail
        for i in range(index, len(node.children)):
            node.acc += node.term(i, _digest_of(node.children[i]))
            node.containers += _is_container(node.children[i])
        node.acc %= _MOD
        node._digest = None
        self._propagate(value, parent, chain)

    def _set_entry(self, node: _Node, key: str | int, old: Child | None, new_value: Any) -> None:
        if old is not None:
            node.acc -= node.term(key, _digest_of(old))
            node.containers -= _is_container(old)
        if node.partial and node.is_dict:
            # A partial node has learned the old entry if there was one (before_change).
            node.count += (new_value is not _MISSING) - (old is not None)
        if new_value is _MISSING:
            if node.is_dict:
                node.children.pop(key, None)
        else:
            new = _build(new_value)
            if node.is_dict:
                node.children[key] = new
            else:
                assert isinstance(key, int)
                if key == len(node.children):
                    node.children.append(new)
                else:
                    node.children[key] = new
            node.acc += node.term(key, _digest_of(new))
            node.containers += _is_container(new)
        node.acc %= _MOD
        node._digest = None

    def _propagate(self, value: Any, path: tuple[str | int, ...],
                   chain: list[tuple[_Node, str | int, bytes]]) -> None:
        """Walk back up ``chain``, repacking small nodes and fixing each parent's sum."""
        for depth in range(len(chain) - 1, -1, -1):
            parent, key, old_digest = chain[depth]
            child = _child(parent, key)
            assert isinstance(child, _Node)
            if child.containers == 0 and child.size() <= PACK_LIMIT:
                sub = _lookup_path(value, path[: depth + 1])
                new_child: Child = _PackedLeaf(_leaf(sub))
                parent.children[key] = new_child
            else:
                new_child = child
            parent.acc = (parent.acc - parent.term(key, old_digest)
                          + parent.term(key, _digest_of(new_child))) % _MOD
            parent._digest = None


def _know(node: _Node, data: Any, key: str | int) -> None:
    """Give a partial node its child at ``key``, built from ``data``, if it lacks it."""
    if node.is_dict:
        if key not in node.children and key in data:
            node.children[key] = _build(data[key])
    elif isinstance(key, int) and 0 <= key < len(node.children) and node.children[key] is None:
        node.children[key] = _build(data[key])


def _collect(node: _Node, path: list[str | int], out: list[list[Any]]) -> int:
    """Append the sums of ``node``'s big subtrees, then its own if it is big; its weight."""
    weight = node.size()
    items = node.children.items() if node.is_dict else enumerate(node.children)
    for key, child in items:
        if isinstance(child, _Node):
            weight += _collect(child, [*path, key], out)
    if weight > SUMS_MIN_WEIGHT or node.partial or not path:
        out.append([path, node.is_dict, node.size(), node.containers,
                    node.acc.to_bytes(32, "big").hex()])
    return weight


def _parse_sum(entry: Any) -> tuple[tuple[str | int, ...], bool, int, int, int]:
    try:
        path, is_dict, size, containers, acc = entry
        ok = (isinstance(path, list) and all(isinstance(k, (str, int)) for k in path)
              and isinstance(is_dict, bool) and isinstance(size, int) and size >= 0
              and isinstance(containers, int) and 0 <= containers <= size
              and isinstance(acc, str) and len(acc) == 64)
        if ok:
            return tuple(path), is_dict, size, containers, int(acc, 16)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"malformed sum entry {entry!r:.80}")


def _child(node: _Node, key: str | int) -> Child | None:
    if node.is_dict:
        result: Child | None = node.children.get(key)
        return result
    assert isinstance(key, int)
    return node.children[key] if 0 <= key < len(node.children) else None


def _member(container: Any, key: Any) -> Any:
    """``container[key]`` where the types fit and the entry exists, else ``_MISSING``."""
    if isinstance(container, dict) and isinstance(key, str):
        return container.get(key, _MISSING)
    if isinstance(container, list) and type(key) is int and 0 <= key < len(container):
        return container[key]
    return _MISSING


def _lookup(container: Any, key: str | int) -> Any:
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    assert isinstance(key, int)
    return container[key] if 0 <= key < len(container) else _MISSING


def _lookup_path(value: Any, path: tuple[str | int, ...]) -> Any:
    for k in path:
        value = value[k]
    return value
