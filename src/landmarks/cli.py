"""Command line: `python -m landmarks <command> ...`.

Each command is registered by one `_register_<name>(subparsers)` function listed in
`_REGISTRARS`; its handler imports the heavy modules it needs only when it runs, so that
`--help` does not import TensorFlow. Errors of type `LandmarksError` (bad input, bad settings)
are printed as one line `error: ...` with exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from landmarks.errors import LandmarksError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- commands -------------------------------------------------------------------------------
# One registrar per command: it adds a subparser and sets `handler` to a function(args) -> int.


_REGISTRARS: list = []


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command that exists."""
    parser = argparse.ArgumentParser(
        prog="python -m landmarks",
        description="Google Landmark Recognition/Retrieval pipeline: data, training, kNN inference.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the command, return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except LandmarksError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
