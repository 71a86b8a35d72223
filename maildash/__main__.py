"""`python -m maildash`: see maildash/cli.py."""

from maildash.cli import app

app(prog_name="maildash")
