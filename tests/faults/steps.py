"""The crash plan: twenty checkpoints registered as ``tests.faults.steps:<function>``.

Each one changes the persistent cache and the files under the target root as
a deterministic function of its arguments and of the state it starts from.
Most are deliberately not idempotent (a counter grows, a journal gets a line,
a file is renamed), so a resume that does not roll both back exactly ends in a
different state from an uninterrupted run.

A child process may make them *slow-walk*: it puts a callable at
``ctx.volatile["work"]`` that spends a tiny random time, and every checkpoint
calls it between its edits, so that random kills land inside checkpoints as
well as between them. The callable only spends time; it changes nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from installengine.eventlog import canonical_json
from installengine.statemachine import Context, InstallEngine

MODULE = "tests.faults.steps"

#: what the application puts in the cache before it executes
APP_CACHE: dict[str, Any] = {"app": {"installer": "faults", "disks": ["/dev/vda"]}}


def _work(ctx: Context) -> None:
    work = ctx.volatile.get("work")
    if callable(work):
        work()


def _root(ctx: Context) -> Path:
    if ctx.target is None:
        raise RuntimeError(f"checkpoint {ctx.name!r} needs a target")
    return ctx.target.root


def _text(seed: str, size: int) -> str:
    """``size`` characters of deterministic, incompressible-looking text."""
    out = []
    block = seed.encode()
    for _ in range(0, size, 64):
        block = hashlib.sha256(block).digest()
        out.append(block.hex())
    return "".join(out)[:size]


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def seed_layout(ctx: Context, dirs: list[str]) -> None:
    root = _root(ctx)
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        _work(ctx)
    _write(root / "etc" / "hostname", "faults-host\n")
    ctx.cache["layout"] = {"dirs": list(dirs)}


def count(ctx: Context, key: str, by: int) -> None:
    """``cache[key] += by`` and a file that says so: running twice shows."""
    value = int(ctx.cache.get(key, 0)) + by
    _work(ctx)
    _write(_root(ctx) / "var" / "lib" / f"{key}.txt", f"{value}\n")
    ctx.cache[key] = value


def append_journal(ctx: Context, line: str) -> None:
    """One more line in ``journal.txt`` and in ``cache['journal']``."""
    path = _root(ctx) / "var" / "log" / "journal.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"{line}\n")
    _work(ctx)
    ctx.cache.setdefault("journal", []).append(line)


def write_tree(ctx: Context, subdir: str, files: int, size: int) -> None:
    root = _root(ctx) / subdir
    for i in range(files):
        _write(root / f"f{i:02d}.txt", _text(f"{subdir}/{i}", size))
        if i % 8 == 0:
            _work(ctx)
    ctx.cache.setdefault("trees", {})[subdir] = files


def bulk(ctx: Context, key: str, chunks: int, size: int) -> None:
    """A large value (hundreds of KB in a few strings): the next point writes a snapshot file."""
    value = [_text(f"{key}{i}", size) for i in range(chunks)]
    _work(ctx)
    ctx.cache[key] = value
    _write(_root(ctx) / "var" / "lib" / f"{key}.list", "\n".join(v[:16] for v in value))


def rename(ctx: Context, source: str, dest: str) -> None:
    root = _root(ctx)
    os.rename(root / source, root / dest)
    _work(ctx)
    ctx.cache.setdefault("renamed", {})[source] = dest


def nest(ctx: Context, key: str, depth: int) -> None:
    """A deep chain of objects, then edits deep inside it through the tracked views."""
    value: dict[str, Any] = {"leaf": 0}
    for level in range(depth):
        value = {f"l{level}": value, "n": level}
    ctx.cache[key] = value
    _work(ctx)
    node = ctx.cache[key]
    for level in reversed(range(depth)):
        node = node[f"l{level}"]
    node["leaf"] = depth
    node["extra"] = [1, 2, {"three": 3}]


def symlink(ctx: Context, link: str, points_to: str) -> None:
    path = _root(ctx) / link
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(points_to, path)
    ctx.cache.setdefault("links", {})[link] = points_to


def remove_file(ctx: Context, relpath: str) -> None:
    (_root(ctx) / relpath).unlink()
    _work(ctx)
    trees = ctx.cache["trees"]
    subdir = str(Path(relpath).parent)
    trees[subdir] = int(trees[subdir]) - 1


def chmod(ctx: Context, relpath: str, mode: int) -> None:
    os.chmod(_root(ctx) / relpath, mode)
    ctx.cache.setdefault("modes", {})[relpath] = mode


def drop_key(ctx: Context, key: str) -> None:
    del ctx.cache[key]
    _work(ctx)
    (_root(ctx) / "var" / "lib" / f"{key}.list").unlink()


def finalize(ctx: Context) -> None:
    """A file whose content depends on the whole cache: any drift anywhere shows here."""
    _work(ctx)
    digest = hashlib.sha256(canonical_json(ctx.cache.to_plain())).hexdigest()
    _write(_root(ctx) / "etc" / "install.done", digest + "\n")
    ctx.cache["done"] = digest


#: (name, function, args): the crash plan, in order
PLAN: list[tuple[str, str, list[Any]]] = [
    ("layout", "seed_layout", [["etc", "var/lib", "var/log", "usr/share"]]),
    ("count-1", "count", ["counter", 1]),
    ("journal-1", "append_journal", ["partitioned"]),
    ("docs", "write_tree", ["usr/share/doc", 10, 1024]),
    ("packages", "bulk", ["packages", 40, 8192]),
    ("count-2", "count", ["counter", 10]),
    ("journal-2", "append_journal", ["formatted"]),
    ("rename-hostname", "rename", ["etc/hostname", "etc/hostname.orig"]),
    ("config", "nest", ["config", 30]),
    ("localtime", "symlink", ["etc/localtime", "../usr/share/zoneinfo/UTC"]),
    ("prune-doc", "remove_file", ["usr/share/doc/f07.txt"]),
    ("count-3", "count", ["counter", 100]),
    ("payload", "bulk", ["payload", 60, 8192]),
    ("chmod-hostname", "chmod", ["etc/hostname.orig", 0o640]),
    ("journal-3", "append_journal", ["configured"]),
    ("drop-packages", "drop_key", ["packages"]),
    ("app-tree", "write_tree", ["opt/app", 4, 4096]),
    ("count-4", "count", ["counter", 1000]),
    ("journal-4", "append_journal", ["users"]),
    ("finalize", "finalize", []),
]

NAMES = [name for name, _, _ in PLAN]


def register_plan(engine: InstallEngine, plan: list[tuple[str, str, list[Any]]] | None = None) -> None:
    """Register the crash plan (or ``plan``) on ``engine``, the same way every time."""
    for name, function, args in PLAN if plan is None else plan:
        engine.register(name, f"{MODULE}:{function}", args=args)


def set_app_cache(engine: InstallEngine) -> None:
    for key, value in APP_CACHE.items():
        engine.cache[key] = value


# -- small checkpoints for the other fault tests -----------------------------------------------


def put(ctx: Context, key: str, value: Any) -> None:
    """``cache[key] = value``."""
    ctx.cache[key] = value


def grow(ctx: Context, key: str, size: int) -> None:
    """``cache[key]`` = ``size`` characters: fills a small disk quickly."""
    ctx.cache[key] = _text(key, size)


def touch(ctx: Context, relpath: str, content: str) -> None:
    """Write a file under the target root and note it in the cache."""
    _write(_root(ctx) / relpath, content)
    ctx.cache[ctx.name] = relpath


def wait_for(ctx: Context) -> None:
    """Wait for ``volatile['release']`` (a threading.Event), at most 30 s."""
    gate = ctx.volatile.get("release")
    if gate is not None and not gate.wait(30):
        raise TimeoutError("nobody released the checkpoint")
    ctx.cache[ctx.name] = True



def fill(ctx: Context, relpath: str, size: int) -> None:
    """Write ``size`` bytes to a file under the target root (fills a small disk)."""
    path = _root(ctx) / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for _ in range(0, size, 64 * 1024):
            f.write(b"z" * 64 * 1024)
    ctx.cache[ctx.name] = relpath


def anything(ctx: Context, *args: Any, **kwargs: Any) -> None:
    """Takes any registration arguments (for tests of what registration refuses)."""
    ctx.cache[ctx.name] = [list(args), kwargs]
