"""The `mptcplab` command: argparse -> one API call -> a report. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mptcplab.errors import ExitStatus, LabError


def _add_topo_commands(sub: argparse._SubParsersAction) -> None:
    """`topo up/down/list/show` and `clean` (topology issue)."""


def _decode(args: argparse.Namespace) -> int:
    from mptcplab.decode import decode_file
    from mptcplab.report import json_line, segment_line

    shown = 0
    for seg in decode_file(args.file, mptcp_only=not args.all):
        print(json_line(seg.as_dict()) if args.json else segment_line(seg))
        shown += 1
        if args.count and shown >= args.count:
            break
    return ExitStatus.OK


def _add_decode_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the MPTCP options in a pcap/pcapng file",
                       description="Decode every MPTCP option in a capture file with the "
                                   "lab's Scapy layers, one line per segment.")
    p.add_argument("file", help="pcap or pcapng file")
    p.add_argument("--json", action="store_true", help="one JSON object per segment")
    p.add_argument("--all", action="store_true", help="show TCP segments without MPTCP options")
    p.add_argument("-c", "--count", type=int, default=0, metavar="N",
                   help="stop after N segments")
    p.set_defaults(func=_decode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mptcplab", description="A lab for Multipath TCP on a real Linux kernel.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_decode_command(sub)
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
