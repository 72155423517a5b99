"""JSON Patch between cache states: pure, and applied in place.

The engine records changes as they happen, so it rarely needs ``diff``; what it
needs on every resume is a fast ``apply`` that edits the state in place instead
of deep-copying a 10 MB tree for each patch.
"""

from __future__ import annotations

from typing import Any

from installengine.eventlog import UsageError

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


def _container(state: Any, tokens: list[str]) -> Any:
    node = state
    for t in tokens:
        node = node[int(t)] if isinstance(node, list) else node[t]
    return node


def apply(state: Any, patch: Patch) -> Any:
    """Apply ``patch`` to ``state`` in place and return the new state.

    ``add``, ``replace`` and ``remove`` are handled here; other operations go to
    jsonpatch. A patch that does not fit the state raises UsageError.
    """
    for op in patch:
        kind = op.get("op")
        if kind not in ("add", "replace", "remove"):
            import jsonpatch

            state = jsonpatch.apply_patch(state, [op], in_place=True)
            continue
        tokens = parse_pointer(op["path"])
        if not tokens:
            if kind == "remove":
                raise UsageError("a patch cannot remove the whole document")
            state = op["value"]
            continue
        try:
            parent = _container(state, tokens[:-1])
            last = tokens[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    if not 0 <= index <= len(parent):
                        raise IndexError(index)
                    parent.insert(index, op["value"])
                elif kind == "replace":
                    parent[index] = op["value"]
                else:
                    del parent[index]
            elif isinstance(parent, dict):
                if kind == "add":
                    parent[last] = op["value"]
                elif kind == "replace":
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
                else:
                    del parent[last]
            else:
                raise TypeError(f"{type(parent).__name__} has no members")
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise UsageError(f"patch operation {kind} {op['path']} does not fit the state: "
                             f"{err!r}") from err
    return state
