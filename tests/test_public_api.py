"""The public surface: each package's __all__, the SPEC's imports, and the direction of imports."""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: source folder -> the package it is installed as
FOLDERS = {"eventlog": "installengine.eventlog", "snapshots": "installengine.snapshots",
           "statemachine": "installengine.statemachine"}

#: the public packages; their modules and subpackages (snapshots.targets) are internal
PACKAGES = ["installengine.eventlog", "installengine.snapshots", "installengine.statemachine"]

#: the import statements of the SPEC's "Python API" section, name by name
SPEC_IMPORTS = {
    "installengine.statemachine": [
        "InstallEngine", "Checkpoint", "Status", "Result", "ErrorInfo", "ProgressEvent",
        "Verdict", "CheckpointCanceled", "EngineError", "RegistrationError", "UsageError",
        "EngineStateError", "NotResumableError", "TargetError", "TargetLockedError",
        "LogIntegrityError", "SchemaVersionError", "PlanError"],
    "installengine.snapshots": ["ZfsTarget", "BtrfsTarget", "DirectoryTarget", "StateDir",
                                "target_from_spec"],
    "installengine.eventlog": ["EventLog", "Event", "VerifyReport"],
}

SPEC_ERRORS = ["EngineError", "RegistrationError", "UsageError", "EngineStateError",
               "NotResumableError", "TargetError", "TargetLockedError", "LogIntegrityError",
               "SchemaVersionError", "PlanError"]


def public_names(module: types.ModuleType) -> set[str]:
    """What ``module`` exports: names without an underscore, minus its own submodules."""
    names = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if isinstance(value, types.ModuleType) and value.__name__.startswith(
                module.__name__ + "."):
            continue  # a submodule, bound by importing it: internal by our rule
        if type(value).__module__ == "__future__":
            continue  # "from __future__ import annotations" binds a name, exports nothing
        names.add(name)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_all_equals_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{package} has no __all__"
    assert len(exported) == len(set(exported)), f"{package}.__all__ lists a name twice"
    assert sorted(exported) == sorted(public_names(module))


@pytest.mark.parametrize("package", PACKAGES)
def test_everything_in_all_exists(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize(("package", "names"), sorted(SPEC_IMPORTS.items()))
def test_every_spec_import_works(package: str, names: list[str]) -> None:
    module = importlib.import_module(package)
    assert [n for n in names if n not in module.__all__] == []
    for name in names:
        assert getattr(module, name) is not None


def test_the_spec_import_statements_run() -> None:
    code = "\n".join(f"from {package} import ({', '.join(names)})"
                     for package, names in SPEC_IMPORTS.items())
    namespace: dict[str, object] = {}
    exec(compile(code, "<SPEC Python API>", "exec"), namespace)  # the SPEC's own lines
    assert {n for names in SPEC_IMPORTS.values() for n in names} <= set(namespace)


def test_every_error_derives_from_engine_error() -> None:
    sm = importlib.import_module("installengine.statemachine")
    base = sm.EngineError
    assert base is importlib.import_module("installengine.eventlog").EngineError
    for name in SPEC_ERRORS:
        cls = getattr(sm, name)
        assert issubclass(cls, base), name
        assert cls.__doc__, f"{name} has no docstring"
    assert issubclass(sm.TargetLockedError, sm.TargetError)


def test_the_spec_targets_are_the_same_objects_everywhere() -> None:
    sm = importlib.import_module("installengine.statemachine")
    snap = importlib.import_module("installengine.snapshots")
    for name in ("ZfsTarget", "BtrfsTarget", "DirectoryTarget", "StateDir", "target_from_spec",
                 "Verdict", "TargetError"):
        if hasattr(sm, name):
            assert getattr(sm, name) is getattr(snap, name), name


# -- the direction of imports ---------------------------------------------------------------------


def module_name(path: Path) -> tuple[str, str]:
    """(module, package) of a source file, as installed."""
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:-1]]
    package = ".".join(parts)
    if path.name == "__init__.py":
        return package, package
    return f"{package}.{path.stem}", package


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    _, package = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # "from pkg import sub" may import a submodule
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offending(folder: str, forbidden: list[str]) -> list[str]:
    bad = []
    for path in sources(folder):
        for line, name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_the_source_folders_are_there() -> None:
    for folder in FOLDERS:
        assert sources(folder), f"no sources in {folder}/"


def test_eventlog_imports_neither_snapshots_nor_statemachine() -> None:
    assert offending("eventlog", ["installengine.snapshots", "installengine.statemachine"]) == []


def test_snapshots_never_imports_statemachine() -> None:
    assert offending("snapshots", ["installengine.statemachine"]) == []


def test_eventlog_imports_only_the_stdlib_and_its_dependencies() -> None:
    allowed = set(sys.stdlib_module_names) | {"sqlite_utils", "orjson", "__future__"}
    bad = []
    for path in sources("eventlog"):
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top == "installengine":
                if not (name == "installengine.eventlog"
                        or name.startswith("installengine.eventlog.")):
                    bad.append(f"{path.name}:{line} {name}")
            elif top not in allowed:
                bad.append(f"{path.name}:{line} {name}")
    assert bad == []


def test_the_scan_resolves_relative_imports() -> None:
    # a guard for the scan itself: snapshots/targets/base.py imports ..errors
    found = {name for _, name in imported_modules(ROOT / "snapshots" / "targets" / "base.py")}
    assert "installengine.snapshots.errors" in found
