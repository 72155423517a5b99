"""The installengine command line (being written)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("installengine: the command line is not built yet")
