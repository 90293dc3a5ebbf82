"""The `mptcplab` command: argparse -> one API call -> a report. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mptcplab.errors import ExitStatus, LabError


def _add_topo_commands(sub: argparse._SubParsersAction) -> None:
    """`topo up/down/list/show` and `clean` (topology issue)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mptcplab", description="A lab for Multipath TCP on a real Linux kernel.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_topo_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or ExitStatus.OK)
    except LabError as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"mptcplab: error: {exc}", file=sys.stderr)
        return int(exc.status)
    except KeyboardInterrupt:
        print("mptcplab: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitStatus.OK)


if __name__ == "__main__":
    sys.exit(main())
