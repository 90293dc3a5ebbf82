"""The `mptcplab` command: argparse -> one API call -> a report. Nothing else lives here.

One module per command group, each with a `register(subparsers)`; COMMANDS lists them in the
order `mptcplab --help` shows them. A command line naming a command imports only the module
that registers it (start-up is part of every short run: `sniff -r` on a small file, a demo);
`--help`, a typo or no command builds the whole parser. A module registering commands under
other names than its own lists them in ALSO.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from mptcplab.errors import ExitStatus, LabError

COMMANDS = ("demo", "pictures", "decode", "sniff", "topo", "pm", "nc", "cases", "vm")
# Commands registered by a module of another name: command -> module.
ALSO = {"clean": "topo", "exec": "topo", "ladder": "pictures", "plot": "pictures"}


def module_of(argv: Sequence[str]) -> str | None:
    """The one command module the command line needs, or None for the whole parser."""
    for word in argv:
        if word == "--traceback":
            continue
        if word in COMMANDS:
            return word
        return ALSO.get(word)       # None: -h, a typo, an option where a command belongs
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of those the module ``only`` registers."""
    parser = argparse.ArgumentParser(
        prog="mptcplab", description="A lab for Multipath TCP on a real Linux kernel.",
        epilog="Exit codes: 0 ok, 1 runtime error, 2 usage, 3 bad input, 4 needs root, "
               "5 missing tool or kernel feature, 129/130/143 hangup/interrupt/terminate.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"mptcplab.cli.{name}").register(sub)
    return parser


def _print_traceback() -> None:
    import traceback  # only on request: it is not small

    traceback.print_exc()


def _signal_status(exc: BaseException) -> int:
    signum = getattr(exc, "signum", signal.SIGINT)
    return 128 + int(signum)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(module_of(argv))
    args, rest = parser.parse_known_args(argv)
    # A command may take words after its options (sniff's FILTER after IFACE and options).
    trailing = getattr(args, "trailing_words", None)
    if rest and (trailing is None or any(w.startswith("-") for w in rest)):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        setattr(args, trailing, getattr(args, trailing) + rest)
    try:
        return int(args.func(args) or ExitStatus.OK)
    except LabError as exc:
        if args.traceback:
            _print_traceback()
        print(f"mptcplab: error: {exc}", file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt as exc:   # Ctrl-C, or SIGTERM/SIGHUP turned into LabTerminated
        if args.traceback:
            _print_traceback()
        if not getattr(exc, "reported", False):
            print(f"mptcplab: {str(exc) or 'interrupted'}", file=sys.stderr)
        return _signal_status(exc)
    except BrokenPipeError:
        return int(ExitStatus.OK)


if __name__ == "__main__":
    sys.exit(main())
