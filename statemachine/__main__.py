"""``python -m installengine.statemachine``: the ``installengine`` command line."""

from .cli import cli

cli.main(prog_name="installengine")
