"""The ``motionsqueeze`` command: one module per subcommand under this package.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``, and keeps
heavy imports inside ``run`` so that ``motionsqueeze --help`` stays fast. To add a
subcommand, write its module and add its name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__

COMMANDS = ["demo", "train", "eval", "predict", "visualize", "flops", "prepare", "check-data", "convert", "export", "stream", "selftest", "fuse", "extract-features"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionsqueeze",
        description="Motion-aware video action recognition (MotionSqueeze, ECCV 2020).",
    )
    parser.add_argument("--version", action="version", version=f"motionsqueeze {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


class ConsoleHandler(logging.Handler):
    """The library's log lines on the console as plain lines: progress lines
    (``motionsqueeze.progress``) on stderr, everything else on stdout. The stream is looked
    up at every line, so a replaced ``sys.stdout`` (tests, notebooks) gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.name == "motionsqueeze.progress" else sys.stdout
            print(self.format(record), file=stream, flush=True)
        except Exception:
            self.handleError(record)


def show_library_log() -> None:
    """Show the ``motionsqueeze`` loggers' INFO lines and above on the console (once)."""
    logger = logging.getLogger("motionsqueeze")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_library_log()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # Problems with the user's input: say what and where, no traceback.
        # MOTIONSQUEEZE_DEBUG=1 shows the traceback.
        if os.environ.get("MOTIONSQUEEZE_DEBUG"):
            raise
        print(f"motionsqueeze {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk, a read-only or unwritable output, --out naming a file: one sentence.
        if os.environ.get("MOTIONSQUEEZE_DEBUG"):
            raise
        from ..files import describe_os_error

        print(f"motionsqueeze {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
