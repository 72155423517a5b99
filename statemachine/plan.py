"""Plan files: the checkpoints of an install written down as TOML.

A plan is validated as a whole when it is loaded: every key, every type,
every name, and every ``call`` reference (it must import), so ``installengine
run`` refuses a bad plan before it touches the target. The plan file's own
directory is importable while the plan is loaded and registered, so a plan can
sit next to the module that holds its checkpoints::

    [engine]
    target = "dir:./target"
    stop_on_error = true

    [[checkpoint]]
    name = "partition"
    call = "mysteps:Partition"
    args = ["/dev/sda"]
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import InstallEngine
from .errors import PlanError, RegistrationError
from .registry import Registration, build_registration, check_name, parse_loglevel, resolve

_TOP_KEYS = {"engine", "checkpoint"}
_ENGINE_KEYS = {"target": str, "stop_on_error": bool}
_CHECKPOINT_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str, "call": str, "args": list, "kwargs": dict, "description": str,
    "version": str, "loglevel": (str, int)}
_REQUIRED = ("name", "call")
#: target schemes whose location is a path, resolved against the plan file's directory
_PATH_SCHEMES = ("dir", "state", "btrfs")


@dataclass(frozen=True, slots=True)
class PlannedCheckpoint:
    """One ``[[checkpoint]]`` table of a plan, validated."""

    name: str
    call: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    version: str | None = None
    loglevel: str | int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A loaded plan file: where it is, its engine settings and its checkpoints in order.

    ``target`` is the ``[engine]`` target spec with a relative path made
    absolute against the plan file's directory, or None when the plan names none.
    """

    path: Path
    target: str | None
    stop_on_error: bool
    checkpoints: tuple[PlannedCheckpoint, ...]
    registrations: tuple[Registration, ...] = field(repr=False, compare=False, default=())

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    @contextmanager
    def importable(self) -> Iterator[None]:
        """Make the plan file's directory importable for the duration of the block."""
        with _on_sys_path(self.path.parent):
            yield


def load_plan(path: str | Path) -> Plan:
    """Read and validate the plan file at ``path``.

    :raises PlanError: naming the file, the key and what to do, for a missing or
        unreadable file, a TOML syntax error (with its line), an unknown key, a
        wrong type, a bad or duplicate name, or a ``call`` that does not import.
    """
    p = Path(path).absolute()
    where = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise PlanError(f"plan file {where} does not exist; pass the path of a .toml plan",
                        path=where) from None
    except OSError as err:
        raise PlanError(f"plan file {where} cannot be read: {err.strerror or err}",
                        path=where) from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PlanError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); save the "
                        "plan as UTF-8", path=where) from err
    except tomllib.TOMLDecodeError as err:
        raise PlanError(f"{where}: invalid TOML: {_with_line(str(err), raw)}",
                        path=where) from err

    _reject_unknown(data, _TOP_KEYS, where, "")
    engine = data.get("engine", {})
    if not isinstance(engine, dict):
        raise _type_error(where, "engine", engine, "a table: [engine]")
    _reject_unknown(engine, set(_ENGINE_KEYS), where, "engine.")
    for key, kind in _ENGINE_KEYS.items():
        if key in engine and not isinstance(engine[key], kind):
            raise _type_error(where, f"engine.{key}", engine[key], _KIND_NAMES[kind])
    tables = data.get("checkpoint", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _type_error(where, "checkpoint", tables, "an array of tables: [[checkpoint]]")
    if not tables:
        raise PlanError(f"{where}: the plan has no checkpoints; add at least one [[checkpoint]] "
                        "table with a name and a call", path=where, key="checkpoint")

    checkpoints = [_checkpoint(t, i, where) for i, t in enumerate(tables)]
    seen: dict[str, int] = {}
    for i, c in enumerate(checkpoints):
        if c.name in seen:
            raise PlanError(f"{where}: checkpoint[{i}].name: {c.name!r} is already the name of "
                            f"checkpoint[{seen[c.name]}]; names are unique",
                            path=where, key=f"checkpoint[{i}].name")
        seen[c.name] = i
    with _on_sys_path(p.parent):
        registrations = tuple(_registration(c, i, where) for i, c in enumerate(checkpoints))
    return Plan(p, _resolve_target(engine.get("target"), p.parent),
                engine.get("stop_on_error", True), tuple(checkpoints), registrations)


def register_plan(engine: InstallEngine, plan: Plan) -> None:
    """Register every checkpoint of ``plan`` into ``engine``, in order.

    :raises RegistrationError: when the engine refuses one (e.g. it is already registered).
    """
    # Check what the engine would refuse before registering anything, so that a
    # refused plan leaves neither registrations nor events behind.
    taken = [c.name for c in plan.checkpoints if c.name in engine.checkpoints]
    if taken:
        raise RegistrationError(f"{plan.path}: checkpoint {taken[0]!r} is already registered; "
                                "names are unique")
    with plan.importable():
        for c in plan.checkpoints:
            engine.register(c.name, c.call, args=c.args, kwargs=c.kwargs, version=c.version,
                            loglevel=c.loglevel, description=c.description)


_KIND_NAMES: dict[type | tuple[type, ...], str] = {
    str: "a string", bool: "true or false", list: "an array", dict: "a table",
    (str, int): "a level name or number"}


def _type_error(where: str, key: str, value: Any, expected: str) -> PlanError:
    return PlanError(f"{where}: {key} must be {expected}, not {_toml_type(value)} {value!r}",
                     path=where, key=key)


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _with_line(message: str, raw: bytes) -> str:
    """tomllib says "at end of document" without a line; name the last line instead."""
    if "(at end of document)" not in message:
        return message
    lines = raw.decode("utf-8").splitlines() or [""]
    return message.replace("(at end of document)",
                           f"(at the end of the file, line {len(lines)})")


def _reject_unknown(table: dict[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise PlanError(f"{where}: unknown key {prefix}{key}; allowed here: "
                            f"{', '.join(sorted(allowed))}", path=where, key=f"{prefix}{key}")


def _checkpoint(table: dict[str, Any], index: int, where: str) -> PlannedCheckpoint:
    prefix = f"checkpoint[{index}]."
    _reject_unknown(table, set(_CHECKPOINT_KEYS), where, prefix)
    for key in _REQUIRED:
        if key not in table:
            raise PlanError(f"{where}: checkpoint[{index}] has no {key}; every [[checkpoint]] "
                            "needs a name and a call", path=where, key=f"{prefix}{key}")
    for key, kind in _CHECKPOINT_KEYS.items():
        value = table.get(key)
        # bool is an int in Python, but `loglevel = true` is no level
        if key in table and (not isinstance(value, kind) or (key == "loglevel"
                                                             and isinstance(value, bool))):
            raise _type_error(where, f"{prefix}{key}", value, _KIND_NAMES[kind])
    try:
        name = check_name(table["name"])
    except RegistrationError as err:
        raise PlanError(f"{where}: {prefix}name: {err}", path=where,
                        key=f"{prefix}name") from None
    try:
        parse_loglevel(name, table.get("loglevel"))
    except RegistrationError as err:
        raise PlanError(f"{where}: {prefix}loglevel: {err}", path=where,
                        key=f"{prefix}loglevel") from None
    return PlannedCheckpoint(name=name, call=table["call"], args=table.get("args", []),
                             kwargs=table.get("kwargs", {}),
                             description=table.get("description", ""),
                             version=table.get("version"), loglevel=table.get("loglevel"))


def _registration(c: PlannedCheckpoint, index: int, where: str) -> Registration:
    prefix = f"checkpoint[{index}]."
    try:
        resolve(c.call, c.name)
    except RegistrationError as err:
        raise PlanError(f"{where}: {prefix}call: {err}", path=where,
                        key=f"{prefix}call") from None
    try:
        return build_registration(c.name, c.call, args=c.args, kwargs=c.kwargs,
                                  version=c.version, loglevel=c.loglevel,
                                  description=c.description)
    except RegistrationError as err:
        # The name, the loglevel and the call are checked above: what is left is the
        # arguments (not JSON, or not fitting the signature).
        key = f"{prefix}{'kwargs' if c.kwargs and not c.args else 'args'}"
        raise PlanError(f"{where}: {key}: {err}", path=where, key=key) from None


def _resolve_target(spec: str | None, base: Path) -> str | None:
    if spec is None:
        return None
    scheme, sep, location = spec.partition(":")
    if sep and scheme in _PATH_SCHEMES and location:
        loc = Path(location).expanduser()
        if not loc.is_absolute():
            return f"{scheme}:{(base / loc).resolve()}"
    return spec


@contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            # The checkpoint code may have removed the entry itself; that is no error.
            with suppress(ValueError):
                sys.path.remove(entry)
