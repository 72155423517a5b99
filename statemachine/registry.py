"""Registering checkpoints: name rules, references, signature binding and fingerprints.

A registration is refused as a whole or accepted as a whole; the fingerprint
(name, ``module:qualname``, args, kwargs, version as canonical JSON) is what the
log compares after a restart to decide whether a recorded run still applies.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from installengine.eventlog import UsageError, canonical_json, check_json, sha256_hex

from .checkpoint import Checkpoint, FunctionCheckpoint
from .errors import RegistrationError

NAME_RULE = re.compile(r"[A-Za-z0-9._-]{1,256}")


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered checkpoint."""

    name: str
    call: str
    factory: Callable[..., Any] = field(repr=False, compare=False)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    loglevel: int | None = None
    description: str = ""

    @property
    def fingerprint(self) -> str:
        return sha256_hex(canonical_json({"name": self.name, "call": self.call,
                                          "args": self.args, "kwargs": self.kwargs,
                                          "version": self.version}))

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.factory)

    def construct(self) -> Checkpoint:
        """Build the checkpoint object; a failure here is an INIT_FAILED execution."""
        if self.is_class:
            obj = self.factory(self.name, *self.args, **self.kwargs)
            if not isinstance(obj, Checkpoint):
                raise TypeError(f"{self.call} did not build a Checkpoint")
            return obj
        return FunctionCheckpoint(self.name, self.factory, list(self.args), dict(self.kwargs))

    def as_json(self) -> dict[str, Any]:
        return {"call": self.call, "args": self.args, "kwargs": self.kwargs,
                "version": self.version, "description": self.description,
                "fingerprint": self.fingerprint,
                "loglevel": logging.getLevelName(self.loglevel) if self.loglevel else None}


def check_name(name: object) -> str:
    """:raises RegistrationError: when ``name`` breaks the name rules."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise RegistrationError(
            f"checkpoint name {name!r} is invalid: use 1–256 ASCII letters, digits, '.', '-' "
            "or '_'")
    return name


def resolve(call: str | Callable[..., Any], name: str) -> tuple[str, Callable[..., Any]]:
    """The ``module:qualname`` reference and the object for ``call``.

    :raises RegistrationError: when it does not import or is not callable.
    """
    if isinstance(call, str):
        module_name, sep, qualname = call.partition(":")
        if not sep or not module_name or not qualname:
            raise RegistrationError(f"checkpoint {name!r}: call {call!r} must look like "
                                    "'package.module:ClassOrFunction'")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as err:
            raise RegistrationError(f"checkpoint {name!r}: cannot import module {module_name!r} "
                                    f"({type(err).__name__}: {err}); check the call reference "
                                    "and that the module is on the path") from err
        for part in qualname.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise RegistrationError(f"checkpoint {name!r}: module {module_name!r} has no "
                                        f"{qualname!r}; check the call reference") from None
        ref = call
    else:
        obj = call
        module = getattr(obj, "__module__", None)
        qual = getattr(obj, "__qualname__", None)
        if not module or not qual or "<locals>" in qual or "<lambda>" in qual:
            raise RegistrationError(
                f"checkpoint {name!r}: {obj!r} has no importable name (a lambda or a local "
                "function); define it at module level so the log can name it")
        ref = f"{module}:{qual}"
    if not callable(obj):
        raise RegistrationError(f"checkpoint {name!r}: {ref} is not callable")
    if inspect.isclass(obj) and not issubclass(obj, Checkpoint):
        raise RegistrationError(f"checkpoint {name!r}: class {ref} is not a Checkpoint subclass; "
                                "derive it from installengine.statemachine.Checkpoint")
    return ref, obj


def _check_arguments(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    for i, value in enumerate(args):
        _check_json_arg(name, f"args[{i}]", value)
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise RegistrationError(f"checkpoint {name!r} kwargs key {key!r} is not a string")
        _check_text(name, f"kwargs key {key!r}", key)
        _check_json_arg(name, f"kwargs[{key!r}]", value)


def _check_text(name: str, where: str, text: str) -> None:
    """A string that is recorded must have a UTF-8 form (no lone surrogate)."""
    try:
        check_json(text)
    except UsageError as err:
        raise RegistrationError(f"checkpoint {name!r} {where}: {err}") from None


def _check_json_arg(name: str, where: str, value: Any) -> None:
    try:
        check_json(value)
    except UsageError as err:
        hint = "pass str(path)" if type(value).__name__.endswith("Path") else (
            "pass a JSON value (str, int, float, bool, None, list, dict)")
        what = type(value).__name__
        if isinstance(value, (list, dict)):
            raise RegistrationError(f"checkpoint {name!r} {where}: {err}") from None
        raise RegistrationError(f"checkpoint {name!r} {where} is a {what}, not JSON; {hint}") \
            from None


def _bind(name: str, ref: str, obj: Callable[..., Any], args: list[Any],
          kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    try:
        sig.bind(name if inspect.isclass(obj) else None, *args, **kwargs)
    except TypeError as err:
        reason = str(err)
        if reason == "too many positional arguments":
            # inspect names no argument here; name the first position that binds to none
            # (the first parameter takes the ctx or the checkpoint name, not an arg).
            slots = sum(1 for p in sig.parameters.values()
                        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
            reason = f"args[{max(slots - 1, 0)}] binds to no parameter ({len(args)} given)"
        raise RegistrationError(f"checkpoint {name!r}: arguments do not fit {ref}{sig}: "
                                f"{reason}") from None


def parse_loglevel(name: str, loglevel: str | int | None) -> int | None:
    if loglevel is None:
        return None
    if isinstance(loglevel, bool):
        raise RegistrationError(f"checkpoint {name!r}: loglevel {loglevel!r} is not a level")
    if isinstance(loglevel, int) and loglevel >= 0:  # logging's levels are never negative
        return loglevel
    if isinstance(loglevel, str):
        level = logging.getLevelName(loglevel.upper())
        if isinstance(level, int):
            return level
    raise RegistrationError(f"checkpoint {name!r}: loglevel {loglevel!r} is not a logging level; "
                            "use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number from 0")


def build_registration(name: object, call: str | Callable[..., Any], *,
                       args: list[Any] | tuple[Any, ...] | None, kwargs: dict[str, Any] | None,
                       version: str | None, loglevel: str | int | None,
                       description: str) -> Registration:
    """Validate everything about one registration, without registering it.

    :raises RegistrationError: naming the first problem.
    """
    checked = check_name(name)
    if args is not None and not isinstance(args, (list, tuple)):
        raise RegistrationError(f"checkpoint {checked!r}: args must be a list, got "
                                f"{type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RegistrationError(f"checkpoint {checked!r}: kwargs must be a dict, got "
                                f"{type(kwargs).__name__}")
    if version is not None and not isinstance(version, str):
        raise RegistrationError(f"checkpoint {checked!r}: version must be a string")
    if not isinstance(description, str):
        raise RegistrationError(f"checkpoint {checked!r}: description must be a string")
    _check_text(checked, "description", description)
    if version is not None:
        _check_text(checked, "version", version)
    arg_list, kw = list(args or []), dict(kwargs or {})
    _check_arguments(checked, arg_list, kw)
    level = parse_loglevel(checked, loglevel)
    ref, obj = resolve(call, checked)
    _bind(checked, ref, obj, arg_list, kw)
    return Registration(checked, ref, obj, arg_list, kw, version, level, description)
