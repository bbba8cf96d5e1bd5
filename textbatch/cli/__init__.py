"""The ``textbatch`` command line: the parser and the end-to-end jobs (recipes) behind it."""

from textbatch.cli.main import main

__all__ = ["main"]
