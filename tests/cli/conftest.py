"""Fixtures of the CLI tests: plans in tmp_path, an in-process runner, the installed command."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from installengine.statemachine.cli import cli

STEPS = Path(__file__).with_name("steps.py")
#: the console script of the environment the tests run in
INSTALLENGINE = str(Path(sys.executable).with_name("installengine"))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def plan_text(checkpoints: Sequence[dict[str, Any]], engine: dict[str, Any] | None = None) -> str:
    lines = []
    if engine:
        lines.append("[engine]")
        lines += [f"{k} = {toml_value(v)}" for k, v in engine.items()]
    for c in checkpoints:
        lines.append("\n[[checkpoint]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in c.items()]
    return "\n".join(lines) + "\n"


class Workspace:
    """A test's directory: its plan files, its target, and the flag files of its checkpoints."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.target = root / "target"
        self.spec = f"dir:{self.target}"
        self.started = root / "started"
        self.release = root / "release"
        shutil.copy(STEPS, root / "cli_steps.py")

    @property
    def log(self) -> Path:
        return self.target / ".installengine" / "log.db"

    def plan(self, checkpoints: Sequence[dict[str, Any]], *, engine: dict[str, Any] | None = None,
             name: str = "plan.toml") -> Path:
        path = self.root / name
        path.write_text(plan_text(checkpoints, {"target": self.spec} if engine is None
                                  else engine))
        return path

    def standard_plan(self, **engine: Any) -> Path:
        """first, wait (blocks until released), last: the plan most tests run."""
        return self.plan([
            {"name": "first", "call": "cli_steps:record", "args": ["first"],
             "description": "record first"},
            {"name": "wait", "call": "cli_steps:wait_for_release",
             "args": [str(self.started), str(self.release)], "description": "wait for release"},
            {"name": "last", "call": "cli_steps:record", "args": ["last"]},
        ], engine={"target": self.spec, **engine})


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def invoke() -> Callable[..., Result]:
    """Run the CLI in this process: ``invoke("run", plan)``; stdout and stderr are apart."""
    def run(*args: object, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], input=input,
                                  catch_exceptions=False)
    return run


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def cli_json(result: Result) -> Any:
    return json.loads(result.stdout)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def installengine(*args: object, cwd: Path | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``installengine`` command to its end."""
    return subprocess.run([INSTALLENGINE, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``installengine`` in a child process; children still running are killed at the end."""
    children: list[subprocess.Popen[str]] = []

    def start(*args: object) -> subprocess.Popen[str]:
        child = subprocess.Popen([INSTALLENGINE, *map(str, args)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


def wait_for_file(path: Path, child: subprocess.Popen[str], timeout: float = 20) -> None:
    """Block until ``path`` exists (the checkpoint created it) or the child ends."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None:
            raise AssertionError(f"child ended with {child.returncode} before {path} existed: "
                                 f"{child.stderr.read() if child.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        # Polling a file the child creates: there is no other channel into the checkpoint.
        select.select([], [], [], 0.01)


def read_line(stream: Any, timeout: float = 20) -> str:
    """The next line of a child's pipe, failing instead of hanging when none comes."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output within {timeout} s")
    return str(stream.readline())
