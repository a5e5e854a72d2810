"""The ``sdesr`` command: every job of the app, headless.

One module per verb (``enhance``, ``bench``, ``evaluate``, ``detect``, ``gallery``: index / match /
eval-match / bench-gallery, ``train``: prepare / train / export); each adds its sub-parser with
``register(subparsers)`` and runs its verb by calling into :mod:`sdesr_gui.core`. This module
builds the parser and turns the application's exceptions into exit codes:

* :class:`~sdesr_gui.core.errors.SdesrError` (bad input, missing weights, impossible settings)
  -> one line ``sdesr: error: ...`` on stderr, exit code 2; nothing half-written is left behind;
* :class:`~sdesr_gui.core.errors.Cancelled` and ``KeyboardInterrupt`` -> exit code 130.
"""

from __future__ import annotations

import argparse
import sys

from ..core.errors import Cancelled, SdesrError, UsageError
from . import bench, detect, enhance, evaluate, gallery, train
from .common import EXIT_INTERRUPTED, EXIT_USAGE, fail

__all__ = ["main", "build_parser", "UsageError", "EXIT_USAGE", "EXIT_INTERRUPTED"]

#: The verb modules, in the order ``sdesr --help`` lists their commands.
VERBS = (enhance, bench, evaluate, train, detect, gallery)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sdesr", description="SDE-SR Studio: score-based SDE face super-resolution "
                                 "(16x16 -> 128x128). Generated faces are investigative leads, not identifications.")
    from .. import __version__

    ap.add_argument("--version", action="version", version=f"sdesr {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS:
        verb.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "command", None):
        ap.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except SdesrError as e:
        return fail(str(e).rstrip("."))
    except Cancelled as e:
        print(f"sdesr: {str(e).rstrip('.')}; unfinished outputs were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("sdesr: interrupted; unfinished outputs were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
