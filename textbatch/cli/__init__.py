"""The ``textbatch`` command line: the parser and the end-to-end jobs behind it."""

from textbatch.threads import apply_cli_thread_policy

apply_cli_thread_policy()  # before anything imports torch (textbatch.threads says why)

from textbatch.cli.main import main  # noqa: E402

__all__ = ["main"]
