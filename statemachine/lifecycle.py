"""The engine's lifecycle as data, the transitions machine built from it, and its diagram.

STATES and TRANSITIONS are the single source: the machine and the Mermaid
diagram in docs/lifecycle.md are both built from them, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transitions.extensions import LockedMachine

STATES = ["idle", "running", "paused", "completed", "failed", "canceled"]

#: every state a new execution may start from
STARTABLE = ["idle", "paused", "completed", "failed", "canceled"]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "start", "source": STARTABLE, "dest": "running"},
    {"trigger": "pause", "source": "running", "dest": "paused"},
    {"trigger": "complete", "source": "running", "dest": "completed"},
    {"trigger": "fail", "source": "running", "dest": "failed"},
    {"trigger": "cancel", "source": "running", "dest": "canceled"},
    {"trigger": "reset", "source": ["paused", "completed", "failed", "canceled"], "dest": "idle"},
]


class Lifecycle:
    """The model the machine decorates; never the public facade."""

    # Both are set by transitions on the instance; declared here for the type checker only.
    state: str
    trigger: Callable[..., bool]


def build_machine(model: Lifecycle, on_finalize: Callable[[Any], None]) -> LockedMachine:
    """A thread-safe machine on ``model``; ``on_finalize`` sees every transition, failed ones too."""
    # Imported when an engine opens: transitions' extensions pull in asyncio, which
    # would double the import time of the package.
    from transitions.extensions import LockedMachine

    return LockedMachine(model=model, states=STATES, transitions=TRANSITIONS, initial="idle",
                         auto_transitions=False, send_event=True, finalize_event=on_finalize,
                         ignore_invalid_triggers=False)


def allowed_triggers(state: str) -> list[str]:
    """The triggers the lifecycle allows from ``state``."""
    found = []
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        if state in sources:
            found.append(str(t["trigger"]))
    return found


def to_mermaid() -> str:
    """The lifecycle as a Mermaid ``stateDiagram-v2``, built by transitions' own diagram support."""
    from transitions.extensions.diagrams import GraphMachine

    class _Model:
        pass

    machine = GraphMachine(model=_Model(), states=STATES, transitions=TRANSITIONS,
                           initial="idle", auto_transitions=False, graph_engine="mermaid",
                           title="installengine lifecycle")
    graph = machine.get_graph()
    return str(graph.draw(None))
