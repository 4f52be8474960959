"""`videoseq` command line: parse, dispatch to one command module, turn errors into one line.

Each command lives in `videoseq/commands/<name>.py` and defines `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Command modules import heavy libraries (torch, cv2) inside `run`, so `--help`
and argument errors stay instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from videoseq import __version__
from videoseq.errors import VideoseqError

COMMANDS = ("demo", "generate", "scan", "compare", "train", "evaluate", "classify", "export", "run", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The `videoseq` parser: one subcommand per module named in `COMMANDS`, each with `--debug`."""
    parser = argparse.ArgumentParser(
        prog="videoseq",
        description="Classify videos as sequences of frames; measure whether memory over time helps.")
    parser.add_argument("--version", action="version", version=f"videoseq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"videoseq.commands.{name}")
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def prepare_process(*, debug: bool) -> None:
    """Settings read when torch and cv2 load (call before importing them); the user's own values win.

    - OpenMP threads sleep instead of spinning between torch ops: spinning threads starve the decode
      threads running alongside (docs/benchmarks/classify.md).
    - OpenCV's and FFmpeg's own stderr logging is silenced unless --debug: a broken file is reported
      once, in our one line."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not debug:
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # AV_LOG_QUIET


def main(argv: Sequence[str] | None = None, *, fast_exit: bool = False) -> int:
    """Run one command; its exit code. `fast_exit` (the console script): a command module that sets
    FAST_EXIT ends the process as soon as its output is flushed (see `_exit_now`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    prepare_process(debug=args.debug)
    try:
        code = int(args._module.run(args) or 0)
        if fast_exit and getattr(args._module, "FAST_EXIT", False):
            _exit_now(code)
        return code
    except VideoseqError as e:
        if args.debug:
            raise
        print(f"videoseq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `videoseq ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"videoseq {args.command}: interrupted", file=sys.stderr)
        return 130


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown: with torch loaded that is a fraction of a
    second of finalizers (one per registered operator library) after the last result is out, for nothing.
    Output is flushed and multiprocessing's own exit hook runs first (children joined, the fork
    server's temporary folder removed); everything the command wrote is already closed."""
    import multiprocessing.util

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe: nothing more can reach the reader anyway
            pass
    multiprocessing.util._exit_function()
    os._exit(code)


def entry() -> None:
    """The console script: run `main` with `fast_exit` and exit the process with its code."""
    sys.exit(main(fast_exit=True))
