"""Registering checkpoints: name rules, references, argument binding, JSON args, loglevels.

A registration is refused as a whole: a refused one leaves the checkpoint list
and the event log exactly as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from installengine.eventlog import EventKind
from installengine.statemachine import InstallEngine, RegistrationError, Status

from tests.statemachine import steps
from tests.statemachine.steps import ref


@contextmanager
def refused(engine: InstallEngine, caplog: pytest.LogCaptureFixture,
            match: str | None = None) -> Iterator[pytest.ExceptionInfo[RegistrationError]]:
    """Expect a RegistrationError that registers nothing and logs nothing."""
    before_names = engine.checkpoints
    before_head = engine.log.head
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="installengine"), \
            pytest.raises(RegistrationError, match=match) as info:
        yield info
    assert engine.checkpoints == before_names
    assert engine.log.head == before_head
    assert [r for r in caplog.records if r.name.startswith("installengine")] == []


def registered_events(engine: InstallEngine) -> list[str | None]:
    return [ev.checkpoint for ev in engine.log.query(kind=EventKind.CHECKPOINT_REGISTERED)]


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Z", "0", "disk-1", "target.zfs", "under_score", ".",
                                  "a" * 256])
def test_valid_names_are_accepted(engine: InstallEngine, name: str) -> None:
    engine.register(name, ref("noop"))
    assert engine.checkpoints == [name]
    assert registered_events(engine) == [name]


@pytest.mark.parametrize("name", ["", "a" * 257, "../x", "x/y", "/abs", "a b", "tab\t",
                                  "ñame", "名前", "emoji\U0001f600", "nul\x00", "back\\slash",
                                  "colon:x"])
def test_bad_names_are_refused(engine: InstallEngine, caplog: pytest.LogCaptureFixture,
                               name: str) -> None:
    with refused(engine, caplog, match="is invalid"):
        engine.register(name, ref("noop"))


@pytest.mark.parametrize("name", [None, 7, b"bytes", ["a"]])
def test_non_string_names_are_refused(engine: InstallEngine, caplog: pytest.LogCaptureFixture,
                                      name: object) -> None:
    with refused(engine, caplog, match="is invalid"):
        engine.register(name, ref("noop"))  # type: ignore[arg-type]


def test_duplicate_name_is_refused(engine: InstallEngine,
                                   caplog: pytest.LogCaptureFixture) -> None:
    engine.register("a", ref("noop"))
    with refused(engine, caplog, match="'a' is already registered"):
        engine.register("a", ref("record"))


# -- insert_before -------------------------------------------------------------------------------


def test_insert_before_puts_the_checkpoint_at_that_position(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    engine.register("c", ref("record"))
    engine.register("b", ref("record"), insert_before="c")
    engine.register("first", ref("record"), insert_before="a")
    assert engine.checkpoints == ["first", "a", "b", "c"]
    positions = {ev.checkpoint: ev.data["position"]
                 for ev in engine.log.query(kind=EventKind.CHECKPOINT_REGISTERED)}
    assert positions == {"a": 0, "c": 1, "b": 1, "first": 0}
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["first", "a", "b", "c"]


def test_insert_before_a_missing_checkpoint_is_refused(engine: InstallEngine,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    engine.register("a", ref("noop"))
    with refused(engine, caplog, match="before 'nope': no such checkpoint; registered: a"):
        engine.register("b", ref("noop"), insert_before="nope")


def test_insert_before_a_completed_checkpoint_is_refused(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture) -> None:
    engine.register("a", ref("noop"))
    engine.register("b", ref("noop"))
    assert engine.execute(pause_before="b").status is Status.PAUSED
    with refused(engine, caplog, match="'a' has already completed"):
        engine.register("x", ref("noop"), insert_before="a")
    # b has not completed: inserting before it is still allowed
    engine.register("x", ref("noop"), insert_before="b")
    assert engine.checkpoints == ["a", "x", "b"]
    assert engine.execute().status is Status.SUCCESS
    assert engine.volatile["ran"] == ["a", "x", "b"]


# -- call references -----------------------------------------------------------------------------


def test_function_object_and_reference_register_the_same_call(engine: InstallEngine) -> None:
    engine.register("by-ref", ref("record"))
    engine.register("by-object", steps.record)
    calls = [ev.data["call"] for ev in engine.log.query(kind=EventKind.CHECKPOINT_REGISTERED)]
    assert calls == [ref("record"), ref("record")]


@pytest.mark.parametrize(("call", "match"), [
    ("no.such.module:fn", "cannot import module 'no.such.module'"),
    ("tests.statemachine.steps:nope", "has no 'nope'"),
    ("tests.statemachine.steps:Record.nope", "has no 'Record.nope'"),
    ("tests.statemachine.steps", "must look like 'package.module:ClassOrFunction'"),
    (":record", "must look like"),
    ("tests.statemachine.steps:", "must look like"),
    ("tests.statemachine.steps:MODULE", "is not callable"),
])
def test_a_call_that_does_not_resolve_is_refused(engine: InstallEngine,
                                                 caplog: pytest.LogCaptureFixture,
                                                 call: str, match: str) -> None:
    with refused(engine, caplog, match=match):
        engine.register("x", call)


def test_a_module_that_raises_on_import_is_refused(engine: InstallEngine,
                                                   caplog: pytest.LogCaptureFixture,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_steps_mod.py").write_text("raise ImportError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with refused(engine, caplog, match="ImportError: half installed"):
        engine.register("x", "broken_steps_mod:fn")


@pytest.mark.parametrize("qualname", ["NotACheckpoint", "DiskError"])
def test_a_class_that_is_not_a_checkpoint_is_refused(engine: InstallEngine,
                                                     caplog: pytest.LogCaptureFixture,
                                                     qualname: str) -> None:
    with refused(engine, caplog, match="is not a Checkpoint subclass"):
        engine.register("x", ref(qualname))


def _local_function_holder() -> object:
    def local(ctx: object) -> None:
        return None
    return local


@pytest.mark.parametrize("call", [lambda ctx: None, _local_function_holder()],
                         ids=["lambda", "local-function"])
def test_a_callable_without_an_importable_name_is_refused(engine: InstallEngine,
                                                          caplog: pytest.LogCaptureFixture,
                                                          call: object) -> None:
    with refused(engine, caplog, match="no importable name"):
        engine.register("x", call)  # type: ignore[arg-type]


# -- arguments bind to the signature ----------------------------------------------------------------


@pytest.mark.parametrize(("call", "args", "kwargs", "names"), [
    ("two_args", [], {}, "'disk'"),
    ("two_args", [], {"size": 3}, "'disk'"),
    ("two_args", ["sda"], {"bogus": 1}, "'bogus'"),
    ("two_args", ["sda"], {"disk": "sdb"}, "'disk'"),
    ("two_args", ["sda", 1, 2], {}, r"args\[2\]"),
    ("noop", ["extra"], {}, r"args\[0\]"),
    ("Record", [1, 2], {}, r"args\[1\]"),
    ("Record", [], {"nope": 2}, "'nope'"),
    ("Record", [], {"name": "again"}, "'name'"),
])
def test_arguments_that_do_not_bind_are_refused_naming_the_parameter(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture, call: str,
        args: list[object], kwargs: dict[str, object], names: str) -> None:
    with refused(engine, caplog, match="arguments do not fit") as info:
        engine.register("x", ref(call), args=args, kwargs=kwargs)
    assert info.match(names)


def test_arguments_that_bind_reach_the_checkpoint(engine: InstallEngine) -> None:
    engine.register("fn", ref("two_args"), args=["sda"], kwargs={"size": 8})
    engine.register("fn-kw", ref("two_args"), kwargs={"disk": "sdb"})
    engine.register("cls", ref("Record"), args=[{"nested": [1, 2]}])
    engine.register("cls-kw", ref("Record"), kwargs={"value": "v"})
    assert engine.execute().status is Status.SUCCESS
    assert engine.cache.to_plain() == {"fn": {"disk": "sda", "size": 8},
                                       "fn-kw": {"disk": "sdb", "size": 1},
                                       "cls": {"nested": [1, 2]}, "cls-kw": "v"}


def test_args_given_as_a_tuple_are_recorded_as_a_list(engine: InstallEngine) -> None:
    engine.register("x", ref("two_args"), args=("sda", 2))  # type: ignore[arg-type]
    (ev,) = engine.log.query(kind=EventKind.CHECKPOINT_REGISTERED)
    assert ev.data["args"] == ["sda", 2]


@pytest.mark.parametrize(("args", "kwargs"), [("sda", None), (None, ["disk"])])
def test_args_and_kwargs_of_the_wrong_container_are_refused(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture, args: object,
        kwargs: object) -> None:
    with refused(engine, caplog, match="must be a"):
        engine.register("x", ref("two_args"), args=args, kwargs=kwargs)  # type: ignore[arg-type]


# -- arguments are JSON ---------------------------------------------------------------------------


def test_a_path_argument_is_refused_with_the_documented_message(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture) -> None:
    with refused(engine, caplog) as info:
        engine.register("format", ref("two_args"), kwargs={"dev": Path("/dev/sda")})
    assert str(info.value) == ("checkpoint 'format' kwargs['dev'] is a PosixPath, not JSON; "
                               "pass str(path)")


@pytest.mark.parametrize(("args", "kwargs", "where"), [
    ([PurePosixPath("/dev/sda")], {}, r"args\[0\] is a PurePosixPath"),
    (["sda", {1, 2}], {}, r"args\[1\] is a set"),
    (["sda"], {"size": b"1"}, r"kwargs\['size'\] is a bytes"),
    (["sda"], {"size": object()}, r"kwargs\['size'\] is a object"),
    ([["ok", Path("/x")]], {}, r"args\[0\]: value at /1 is a PosixPath"),
    ([{"dev": {"path": Path("/x")}}], {}, r"args\[0\]: value at /dev/path is a PosixPath"),
    (["sda"], {"size": float("nan")}, r"kwargs\['size'\]"),
])
def test_non_json_arguments_are_refused_naming_the_argument(
        engine: InstallEngine, caplog: pytest.LogCaptureFixture, args: list[object],
        kwargs: dict[str, object], where: str) -> None:
    with refused(engine, caplog, match=where):
        engine.register("format", ref("two_args"), args=args, kwargs=kwargs)


def test_a_non_string_kwargs_key_is_refused(engine: InstallEngine,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with refused(engine, caplog, match="kwargs key 1 is not a string"):
        engine.register("x", ref("two_args"), args=["sda"], kwargs={1: 2})  # type: ignore[dict-item]


def test_registration_records_the_fingerprint_parts(engine: InstallEngine) -> None:
    engine.register("x", ref("two_args"), args=["sda"], kwargs={"size": 2}, version="2.1",
                    description="Partition the disk", loglevel="debug")
    (ev,) = engine.log.query(kind=EventKind.CHECKPOINT_REGISTERED)
    assert ev.checkpoint == "x"
    assert ev.data["call"] == ref("two_args")
    assert ev.data["args"] == ["sda"]
    assert ev.data["kwargs"] == {"size": 2}
    assert ev.data["version"] == "2.1"
    assert ev.data["description"] == "Partition the disk"
    assert ev.data["loglevel"] == "DEBUG"
    assert len(ev.data["fingerprint"]) == 64


def test_fingerprint_changes_with_call_args_and_version_but_not_description(
        open_engine: Callable[..., InstallEngine]) -> None:
    def fingerprint(**kwargs: Any) -> str:
        eng = open_engine()
        options = {"call": ref("two_args"), "args": ["sda"], **kwargs}
        call = options.pop("call")
        eng.register("x", call, **options)
        (ev,) = eng.log.query(kind=EventKind.CHECKPOINT_REGISTERED)
        return str(ev.data["fingerprint"])

    base = fingerprint()
    assert fingerprint(description="other words", loglevel="INFO") == base
    assert fingerprint(version="2") != base
    assert fingerprint(args=["sdb"]) != base
    assert fingerprint(kwargs={"size": 1}) != base
    assert fingerprint(call=ref("Record")) != base


@pytest.mark.parametrize(("version", "description"), [(2, ""), (None, 3)])
def test_version_and_description_must_be_strings(engine: InstallEngine,
                                                 caplog: pytest.LogCaptureFixture,
                                                 version: object, description: object) -> None:
    with refused(engine, caplog, match="must be a string"):
        engine.register("x", ref("noop"), version=version,  # type: ignore[arg-type]
                        description=description)  # type: ignore[arg-type]


# -- loglevel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("loglevel", "level"), [("DEBUG", logging.DEBUG), ("info", logging.INFO),
                                                 ("Warning", logging.WARNING), (40, 40),
                                                 (5, 5)])
def test_loglevel_names_and_numbers_are_accepted(engine: InstallEngine, loglevel: str | int,
                                                 level: int) -> None:
    engine.register("x", ref("noop"), loglevel=loglevel)
    assert engine.execute().status is Status.SUCCESS
    assert logging.getLogger("installengine.checkpoint.x").level == level


@pytest.mark.parametrize("loglevel", ["LOUD", "", "10", 3.5, True, ["DEBUG"], -7])
def test_bad_loglevels_are_refused(engine: InstallEngine, caplog: pytest.LogCaptureFixture,
                                   loglevel: object) -> None:
    with refused(engine, caplog, match="loglevel"):
        engine.register("x", ref("noop"), loglevel=loglevel)  # type: ignore[arg-type]


def test_a_refused_registration_leaves_later_ones_working(engine: InstallEngine) -> None:
    engine.register("a", ref("record"))
    with pytest.raises(RegistrationError):
        engine.register("b", ref("two_args"))
    engine.register("b", ref("two_args"), args=["sda"])
    assert engine.checkpoints == ["a", "b"]
    assert registered_events(engine) == ["a", "b"]
    assert engine.execute().status is Status.SUCCESS
