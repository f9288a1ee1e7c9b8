"""``python -m commands``: the ``subledger`` command line, where its script is not on PATH."""

from commands.cli import app

app()
