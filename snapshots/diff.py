"""JSON Patch between cache states: pure, and applied in place.

The engine records changes as they happen, so it rarely needs ``diff``; what it
needs on every resume is a fast ``apply`` that edits the state in place instead
of deep-copying a 10 MB tree for each patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from installengine.eventlog import UsageError

if TYPE_CHECKING:
    from .digest import DigestTree

Patch = list[dict[str, Any]]


def pointer(path: tuple[str | int, ...]) -> str:
    """The JSON Pointer (RFC 6901) for a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def parse_pointer(ptr: str) -> list[str]:
    """The unescaped tokens of a JSON Pointer.

    :raises UsageError: when ``ptr`` is not a pointer.
    """
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise UsageError(f"{ptr!r} is not a JSON Pointer; it must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


def diff(a: Any, b: Any) -> Patch:
    """A JSON Patch that turns ``a`` into ``b``."""
    import jsonpatch  # only here and for rare ops: keeps importing the engine cheap

    ops: Patch = jsonpatch.make_patch(a, b).patch
    return ops


def _container(state: Any, tokens: list[str]) -> tuple[Any, tuple[str | int, ...]]:
    """The container at ``tokens`` and its path with list indexes as ints."""
    node = state
    path: list[str | int] = []
    for t in tokens:
        key: str | int = int(t) if isinstance(node, list) else t
        if isinstance(key, int) and key < 0:
            raise IndexError(key)
        node = node[key]
        path.append(key)
    return node, tuple(path)


def apply(state: Any, patch: Patch, tree: DigestTree | None = None) -> Any:
    """Apply ``patch`` to ``state`` in place and return the new state.

    ``add``, ``replace`` and ``remove`` are handled here; other operations go to
    jsonpatch. A patch that does not fit the state raises UsageError. ``tree``,
    the digest tree of ``state``, is kept up to date edit by edit.
    """
    for op in patch:
        kind = op.get("op")
        if kind not in ("add", "replace", "remove"):
            import jsonpatch

            state = jsonpatch.apply_patch(state, [op], in_place=True)
            if tree is not None:
                tree.reset(state)
            continue
        tokens = parse_pointer(op["path"])
        if not tokens:
            if kind == "remove":
                raise UsageError("a patch cannot remove the whole document")
            state = op["value"]
            if tree is not None:
                tree.reset(state)
            continue
        try:
            parent, at = _container(state, tokens[:-1])
            last = tokens[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if not 0 <= index < len(parent) + (kind == "add"):
                    raise IndexError(index)
                if kind == "replace":
                    if tree is not None:
                        tree.before_change(state, at, index)
                    parent[index] = op["value"]
                    if tree is not None:
                        tree.changed(state, at, index)
                else:
                    if tree is not None:
                        tree.before_shift(state, at, index)
                    if kind == "add":
                        parent.insert(index, op["value"])
                    else:
                        del parent[index]
                    if tree is not None:
                        tree.shifted(state, at, index)
            elif isinstance(parent, dict):
                if kind != "add" and last not in parent:
                    raise KeyError(last)
                if tree is not None:
                    tree.before_change(state, at, last)
                if kind == "remove":
                    del parent[last]
                else:
                    parent[last] = op["value"]
                if tree is not None:
                    tree.changed(state, at, last)
            else:
                raise TypeError(f"{type(parent).__name__} has no members")
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise UsageError(f"patch operation {kind} {op['path']} does not fit the state: "
                             f"{err!r}") from err
    return state
