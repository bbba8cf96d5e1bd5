"""The ``textbatch`` command line: the parser and the end-to-end jobs behind it."""

from textbatch.cli.main import main

__all__ = ["main"]
