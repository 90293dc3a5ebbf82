"""`mptcplab decode FILE`: every MPTCP option of a capture through the Scapy layers."""

from __future__ import annotations

import argparse

from mptcplab.cli.common import count
from mptcplab.errors import ExitStatus


def _decode(args: argparse.Namespace) -> int:
    from mptcplab.decode import decode_file
    from mptcplab.report import json_line, segment_json, segment_line

    shown = 0
    for seg in decode_file(args.file, mptcp_only=not args.all, fast=args.fast):
        print(json_line(segment_json(seg)) if args.json else segment_line(seg))
        shown += 1
        if args.count and shown >= args.count:
            break
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the MPTCP options in a pcap/pcapng file",
                       description="Decode every MPTCP option in a capture file with the "
                                   "lab's Scapy layers, one line per segment.")
    p.add_argument("file", help="pcap or pcapng file")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per segment: sniff's contract without tracking "
                        "(no connection, subflow or verdicts; see docs/sniff.md)")
    p.add_argument("--all", action="store_true", help="show TCP segments without MPTCP options")
    p.add_argument("--fast", action="store_true",
                   help="decode with the struct path instead of Scapy and the layers "
                        "(same output, many times faster)")
    p.add_argument("-c", "--count", type=count, default=0, metavar="N",
                   help="stop after N segments")
    p.set_defaults(func=_decode)


