"""A second process for restart, crash and lock tests: one engine session driven by JSON.

Run as ``python -m tests.statemachine.child '<request>'`` from the repository root
(see :func:`command`). The request names the target, the checkpoints to
register, what to put in the caches and what to execute; the child prints one
JSON line about how it ended. With ``"hold": true`` it prints a ``ready`` line
after opening and keeps the engine (and the target lock) until its stdin
closes or sends a line. With ``"close": false`` it exits without closing the
engine, as a crashed installer would leave the target.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def command(request: dict[str, Any]) -> list[str]:
    """The argv that runs one child session for ``request``."""
    return [sys.executable, "-m", "tests.statemachine.child", json.dumps(request)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: the repository root importable, the test's temp root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> int:
    from installengine.statemachine import EngineError, InstallEngine

    request: dict[str, Any] = json.loads(argv[0])
    try:
        engine = InstallEngine(request.get("target"),
                               stop_on_error=request.get("stop_on_error", True))
    except EngineError as err:
        _say(error=type(err).__name__, message=str(err),
             holder=getattr(err, "holder", None), pid=os.getpid())
        return 3
    for cp in request.get("checkpoints", []):
        engine.register(cp["name"], cp["call"], args=cp.get("args"), kwargs=cp.get("kwargs"),
                        version=cp.get("version"))
    engine.volatile.update(request.get("volatile", {}))
    for key, value in request.get("cache", {}).items():
        engine.cache[key] = value
    if request.get("hold"):
        _say(ready=True, pid=os.getpid(), session=engine.session.id)
        sys.stdin.readline()
    status = None
    execute = request.get("execute")
    if execute is not None:
        status = engine.execute(**execute).status.name
    report = {"pid": os.getpid(), "session": engine.session.id, "status": status,
              "resumable": engine.resumable(), "cache": engine.cache.to_plain()}
    if not request.get("close", True):
        _say(**report)
        os._exit(0)  # no close(): the session never ends in the log, the lock is left behind
    engine.close()
    _say(**report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
