"""``python -m textbatch`` and the ``textbatch`` command."""

import sys


def run() -> int:
    """The ``textbatch`` command. torch and transformers load first (seconds on a busy
    machine): Ctrl-C while they do is one line and status 130, as it is later, not a
    traceback."""
    try:
        from textbatch.cli.main import main
    except KeyboardInterrupt:
        print("textbatch: interrupted.", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
