"""Security properties: no code-executing formats, private files, no symlink or foreign-owner tricks.

The engine runs as root in an installer, so a file it can be tricked into
writing (through a planted symlink or a directory someone else owns) is a
file anyone could have it overwrite.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from installengine.snapshots import When, fs_snapshot_name
from installengine.statemachine import (
    InstallEngine,
    RegistrationError,
    Status,
    TargetError,
)
from installengine.statemachine.registry import check_name

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("eventlog", "snapshots", "statemachine")

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                     "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec"}
YAML_LOADERS = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load"}

STEP = "tests.statemachine.steps:"
NOBODY = 65534


@pytest.fixture
def any_umask() -> Iterator[None]:
    """Run with umask 0, so modes come from the engine and not from the caller's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- no code-executing formats ---------------------------------------------------------------------


def source_files() -> list[Path]:
    files = [p for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    assert files
    return files


def dangerous(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                yield node.lineno, f"from {node.module} import"
            if node.module == "yaml" and {a.name for a in node.names} & YAML_LOADERS:
                yield node.lineno, "from yaml import load"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS | {"__import__"}:
                yield node.lineno, f"{func.id}()"
            if isinstance(func, ast.Attribute):
                owner = func.value
                if (isinstance(owner, ast.Name) and owner.id == "yaml"
                        and func.attr in YAML_LOADERS):
                    yield node.lineno, f"yaml.{func.attr}()"
                if (isinstance(owner, ast.Name) and owner.id == "builtins"
                        and func.attr in FORBIDDEN_CALLS):
                    yield node.lineno, f"builtins.{func.attr}()"
                if func.attr == "import_module" and node.args and isinstance(
                        node.args[0], ast.Constant) and node.args[0].value in FORBIDDEN_MODULES:
                    yield node.lineno, f"import_module({node.args[0].value!r})"
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    yield node.lineno, "shell=True"


#: the only places outside the package that run code, each on the repository's own text
RUNS_OWN_TEXT = {
    ("tests/cli/test_docs.py", "exec()"): "runs the Python blocks of README.md and docs/",
    ("tests/test_public_api.py", "exec()"): "runs the SPEC's import statements",
}


def test_no_pickle_marshal_shelve_eval_exec_or_yaml_load_anywhere() -> None:
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        found.extend(f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in dangerous(tree))
    assert found == []


def test_tests_benches_and_scripts_use_none_of_them_either() -> None:
    found = []
    for folder in ("tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text(), filename=rel)
            found.extend(f"{rel}:{line}: {what}" for line, what in dangerous(tree)
                         if (rel, what) not in RUNS_OWN_TEXT)
    assert found == []


@pytest.mark.parametrize("code", ["import pickle", "import marshal as m", "from shelve import open",
                                  "eval('1')", "exec('x=1')", "yaml.load(s)",
                                  "from yaml import load", "subprocess.run(c, shell=True)",
                                  "__import__('os')", "importlib.import_module('pickle')"])
def test_the_scan_catches_each_forbidden_form(code: str) -> None:
    assert list(dangerous(ast.parse(code)))


def test_the_scan_lets_safe_forms_through() -> None:
    code = "import json\nyaml.safe_load(s)\nsubprocess.run(c, shell=False)\nobj.eval()\n"
    assert list(dangerous(ast.parse(code))) == []


# -- the volatile area ----------------------------------------------------------------------------


def test_the_volatile_area_is_private_and_ours(temp_root: Path, any_umask: None) -> None:
    with InstallEngine() as engine:
        area = engine.log.path.parent
        parent = area.parent
        assert parent == temp_root / f"installengine-{os.getuid()}"
        for directory in (parent, area):
            assert mode(directory) == 0o700
            assert directory.lstat().st_uid == os.getuid()
        assert mode(engine.log.path) == 0o600
        assert mode(area / "session.json") == 0o600


def test_a_loose_volatile_root_is_tightened(temp_root: Path) -> None:
    parent = temp_root / f"installengine-{os.getuid()}"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    with InstallEngine():
        assert mode(parent) == 0o700


def test_a_symlinked_volatile_root_is_refused(temp_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (temp_root / f"installengine-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(TargetError, match="symlink"):
        InstallEngine()
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a foreign-owned directory needs root")
def test_a_foreign_owned_volatile_root_is_refused(temp_root: Path) -> None:
    parent = temp_root / f"installengine-{os.getuid()}"
    parent.mkdir(mode=0o700)
    os.chown(parent, NOBODY, NOBODY)
    with pytest.raises(TargetError, match=f"owned by uid {NOBODY}"):
        InstallEngine()
    assert list(parent.iterdir()) == []


# -- targets -------------------------------------------------------------------------------------


def test_a_symlinked_state_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "target"
    root.mkdir()
    (root / ".installengine").symlink_to(elsewhere)
    with pytest.raises(TargetError, match="symlink"):
        InstallEngine(f"dir:{root}")
    state = tmp_path / "state-link"
    state.symlink_to(elsewhere)
    with pytest.raises(TargetError, match="symlink"):
        InstallEngine(f"state:{state}")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a foreign-owned directory needs root")
@pytest.mark.parametrize("scheme", ["dir", "state"])
def test_a_foreign_owned_state_directory_is_refused(tmp_path: Path, scheme: str) -> None:
    root = tmp_path / "target"
    state = root / ".installengine" if scheme == "dir" else root
    state.mkdir(parents=True, mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(TargetError, match=f"owned by uid {NOBODY}"):
        InstallEngine(f"{scheme}:{root}")
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("name", ["lock", "log.db"])
def test_a_symlink_planted_in_the_state_directory_is_not_followed(tmp_path: Path,
                                                                  name: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (state / name).symlink_to(victim)
    with pytest.raises(TargetError, match="symlink"):
        InstallEngine(f"state:{state}")
    assert victim.read_text() == "precious"


def test_a_symlinked_snapshot_directory_gets_no_files(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "snapshots").symlink_to(elsewhere)
    with InstallEngine(f"state:{state}") as engine:
        engine.register("big", f"{STEP}record", args=["x" * 300_000])
        # the point stands without its file: files are only caches of the log
        assert engine.execute().status is Status.SUCCESS
        assert engine.resumable() == ["big"]
    assert list(elsewhere.iterdir()) == []
    assert "snapshot file not written" in caplog.text


def test_log_snapshot_and_lock_files_are_private(tmp_path: Path, any_umask: None) -> None:
    state = tmp_path / "state"
    with InstallEngine(f"state:{state}") as engine:
        engine.register("big", f"{STEP}record", args=["x" * 300_000])
        engine.register("small", f"{STEP}record")
        engine.execute()
        files = [p for p in state.rglob("*") if p.is_file()]
        snapshot_files = list((state / "snapshots").glob("*.json"))
        assert snapshot_files, "the big change should have written a snapshot file"
        assert {p.name for p in files} >= {"log.db", "lock"}
        for path in files:
            assert mode(path) == 0o600, path
        for path in [state, *(p for p in state.rglob("*") if p.is_dir())]:
            assert mode(path) == 0o700, path


def test_directory_target_copies_are_private(tmp_path: Path, any_umask: None) -> None:
    root = tmp_path / "target"
    with InstallEngine(f"dir:{root}") as engine:
        engine.register("a", f"{STEP}record")
        engine.execute()
        state = root / ".installengine"
        assert mode(state) == 0o700
        assert mode(state / "fs") == 0o700
        assert mode(state / "log.db") == 0o600


# -- checkpoint names stay inside the state directory ------------------------------------------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=256), st.sampled_from(list(When)))
def test_every_valid_name_gives_one_plain_path_component(name: str, when: When) -> None:
    component = fs_snapshot_name(name, when)
    assert "/" not in component
    assert "\x00" not in component
    assert component not in (".", "..")
    assert Path(component).name == component
    assert len(component.encode()) <= 255 + len(".step_") + len(".before")


@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c not in NAME_CHARS for c in s)))
def test_every_name_with_another_character_is_refused(name: str) -> None:
    # the registry's own name check, which engine.register applies first
    with pytest.raises(RegistrationError, match="is invalid"):
        check_name(name)


def test_dot_names_stay_inside_the_state_directory(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    root = outer / "target"
    with InstallEngine(f"dir:{root}") as engine:
        for name in (".", "..", "...", "-", "_"):
            engine.register(name, f"{STEP}write_file", args=[f"file{len(name)}.txt", name])
        assert engine.execute().status is Status.SUCCESS
        assert engine.execute(start_from="..").status is Status.SUCCESS
        snaps = {s.name for s in engine.target.list_snapshots()} if engine.target else set()
    fs = root / ".installengine" / "fs"
    assert snaps
    assert snaps == {p.name for p in fs.iterdir() if not p.name.startswith(".tmp-")}
    assert all(p.is_dir() and p.parent == fs for p in fs.iterdir())
    # nothing was written beside the target or above its state directory
    assert sorted(p.name for p in outer.iterdir()) == ["target"]
    assert sorted(p.name for p in root.iterdir()) == [".installengine", "file1.txt",
                                                      "file2.txt", "file3.txt"]
