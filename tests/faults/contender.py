"""A process that races others to open an engine on one target (``python -m tests.faults.contender``).

It prints ``waiting``, then waits for the start file (created by the test once
every contender is waiting), then tries to open the engine and prints one of:

- ``won <pid>``: it holds the target; it records a short run, then waits for
  the release file before it closes (``--hold`` prints ``held`` after the run
  and never closes: the test kills it);
- ``locked <holder as JSON>``: the target was taken, and by whom.

Waiting for a file is polled: that is the only way for unrelated processes to
start on one signal without a shared parent object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from installengine.statemachine import InstallEngine, TargetLockedError

from .steps import register_plan

PLAN: list[tuple[str, str, list[object]]] = [("first", "put", ["first", 1]),
                                            ("second", "touch", ["second.txt", "2"])]
POLL = 0.001
GIVE_UP = 60.0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + GIVE_UP
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(POLL)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.contender")
    parser.add_argument("--target", required=True)
    parser.add_argument("--start", type=Path, required=True)
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say("waiting")
    _wait_for(args.start)
    try:
        engine = InstallEngine(args.target)
    except TargetLockedError as err:
        say("locked " + json.dumps(err.holder))
        say("message " + str(err))
        return 0
    say(f"won {os.getpid()}")
    register_plan(engine, PLAN)
    engine.execute()
    if args.hold:
        say("held")
        _wait_for(args.release.with_suffix(".never"))
    _wait_for(args.release)
    engine.close()
    say("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
