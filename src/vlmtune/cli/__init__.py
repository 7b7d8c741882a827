"""Command-line entry points."""

from vlmtune.cli.main import main

__all__ = ["main"]
