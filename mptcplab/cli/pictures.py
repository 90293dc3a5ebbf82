"""`mptcplab ladder` and `mptcplab plot`: the demos' pictures for any capture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mptcplab.cli.common import count, number
from mptcplab.errors import BadInput, ExitStatus, LabError


def _track(path: str, limit: int) -> tuple[list[Any], Any]:
    """The capture's segments through the sniffer's tracker (the first ``limit`` packets)."""
    from mptcplab.analysis import Tracker
    from mptcplab.decode import decode_file

    tracker = Tracker()
    annotated = []
    packets = 0
    for seg in decode_file(path, mptcp_only=False):
        if limit and seg.frame > limit:
            break
        packets += 1
        ann = tracker.feed(seg)
        if ann is not None:
            annotated.append(ann)
    tracker.finish()
    tracker.packets = packets
    if not tracker.connections:
        orphans = (f"; {len(tracker.orphans)} subflow(s) carried MPTCP options but their "
                   "handshake is not in it" if tracker.orphans else "")
        raise BadInput(f"{path}: no MPTCP connection in the capture"
                       + (f" (first {limit} packets)" if limit else "") + orphans)
    return annotated, tracker


def _connection(tracker: Any, wanted: int | None, path: str) -> int:
    numbers = [c.number for c in tracker.connections]
    if wanted is None:
        if len(numbers) > 1:
            print(f"mptcplab: {len(numbers)} MPTCP connections in {path}; drawing connection "
                  f"{numbers[0]} (--conn N for another)", file=sys.stderr)
        return numbers[0]
    if wanted not in numbers:
        raise BadInput(f"{path}: no MPTCP connection {wanted} (it has "
                       f"{', '.join(map(str, numbers))})")
    return wanted


def _output(path: str) -> str:
    if Path(path).suffix.lower() not in (".svg", ".png"):
        raise LabError(f"-o {path}: write a .svg or a .png", ExitStatus.USAGE)
    return path


def _ladder(args: argparse.Namespace) -> int:
    from mptcplab.cli.demo import terminal
    from mptcplab.report.demo import footer_lines
    from mptcplab.report.ladder import build_ladder, ladder_text, rows_json
    from mptcplab.report.lines import ASCII_MARKS, UNICODE_MARKS

    if args.output:
        _output(args.output)
    annotated, tracker = _track(args.read, args.count)
    conn = _connection(tracker, args.conn, args.read)
    colour, unicode, width = terminal(args.color)
    marks = UNICODE_MARKS if unicode or args.output else ASCII_MARKS
    ladder = build_ladder(annotated, connection=conn, every=args.all, marks=marks,
                          title=args.title if args.title is not None else
                          f"{Path(args.read).name}: MPTCP connection {conn}")
    ladder.footer = footer_lines(tracker, Path(args.read).name)
    if args.json:
        for obj in rows_json(ladder):
            print(json.dumps(obj))
        from mptcplab.report import summary_json

        print(json.dumps(summary_json(tracker)))
    if args.output:
        from mptcplab.report.svg import ladder_svg, write_picture

        write_picture(ladder_svg(ladder), args.output)
        print(f"wrote {args.output}: {len(ladder.arrows)} steps of connection {conn}",
              file=sys.stderr if args.json else sys.stdout)
    elif not args.json:
        print(ladder_text(ladder, width=args.width or width, colour=colour, unicode=unicode))
    return ExitStatus.OK


def _rate(text: str) -> tuple[str, float]:
    label, sep, value = text.rpartition("=")
    try:
        mbit = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want LABEL=MBIT, e.g. wifi=50") from None
    if mbit <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be positive")
    return (label if sep else f"{mbit:g} Mbit/s"), mbit


def _plot(args: argparse.Namespace) -> int:
    from mptcplab.analysis import CLIENT, SERVER
    from mptcplab.report.plot import plot_series, series

    _output(args.output)
    annotated, _ = _track(args.read, args.count)
    side = {"client": CLIENT, "server": SERVER, None: None}[args.sender]
    s = series(annotated, connection=args.conn, side=side, bin=args.bin)
    plot_series(s, args.output, title=args.title or f"{Path(args.read).name}: connection "
                f"{s.connection}, {s.direction}", rates=args.rate)
    if args.json:
        print(json.dumps({"type": "series", "file": args.output, **s.summary()}))
        return ExitStatus.OK
    parts = [f"s{sub.number} {sub.bytes:,} bytes ({len(sub.retrans)} retransmitted, "
             f"{len(sub.reinjected)} reinjected)" for sub in s.subflows.values()]
    print(f"wrote {args.output}: connection {s.connection}, {s.direction}, "
          f"{s.duration:.3f} s; " + "; ".join(parts))
    if s.unplaced:
        print(f"mptcplab: {s.unplaced} payload segments had no mapping in the capture and are "
              "not on the sequence plot", file=sys.stderr)
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ladder", help="draw a capture's MPTCP connection as a ladder (terminal, SVG, PNG)",
        description="Draw one MPTCP connection of a capture as a ladder diagram: client and "
                    "server columns, one arrow per segment worth seeing (handshakes, MPTCP "
                    "signals, first data, DATA_FIN, FIN/RST, failed checks; the bulk folded "
                    "into counted gaps), each with its flags, relative sequence numbers, "
                    "decoded options, verdicts and one sentence with its RFC 8684 section. "
                    "On the terminal, or to a file with -o.",
        epilog="Exit codes: 0 ok, 2 usage, 3 unreadable capture or no such connection, "
               "5 cairosvg/cairo missing for PNG.")
    p.add_argument("-r", "--read", required=True, metavar="FILE", help="pcap or pcapng file")
    p.add_argument("-c", "--count", type=count, default=0, metavar="N",
                   help="read only the first N packets")
    p.add_argument("--conn", type=int, metavar="C",
                   help="the connection to draw, numbered as `mptcplab sniff` numbers them "
                        "(default: the first)")
    p.add_argument("--all", action="store_true",
                   help="draw every segment instead of folding the bulk of the data")
    p.add_argument("-o", "--output", metavar="OUT.svg|OUT.png",
                   help="write the ladder as SVG or PNG instead of printing it")
    p.add_argument("--json", action="store_true",
                   help="the steps as JSON lines (the sniffer's packet objects plus step, "
                        "note, rfc), then the summary")
    p.add_argument("--title", help="the title above the ladder")
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--width", type=int, metavar="COLUMNS", help="terminal ladder width")
    p.set_defaults(func=_ladder)

    p = sub.add_parser(
        "plot", help="plot data sequence numbers and throughput per subflow of a capture",
        description="Plot one direction of one MPTCP connection of a capture: the data "
                    "sequence number of every segment over time, one colour per subflow, "
                    "with retransmissions (x), reinjections of data another subflow carried "
                    "(o) and the DATA_ACKs; below, Mbit/s per subflow and for the connection.",
        epilog="Exit codes: 0 ok, 2 usage, 3 unreadable capture, nothing to plot or no such "
               "connection, 5 matplotlib/cairo missing.")
    p.add_argument("-r", "--read", required=True, metavar="FILE", help="pcap or pcapng file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|OUT.png",
                   help="the picture to write")
    p.add_argument("-c", "--count", type=count, default=0, metavar="N",
                   help="read only the first N packets")
    p.add_argument("--conn", type=int, metavar="C",
                   help="the connection (default: the one that carried the most data)")
    p.add_argument("--from", dest="sender", choices=("client", "server"),
                   help="whose data to plot (default: the direction that carried the most)")
    p.add_argument("--bin", type=number(float, "a number of seconds", 0.0005, 3600),
                   metavar="SECONDS",
                   help="throughput interval (default: about 60 per plot)")
    p.add_argument("--rate", type=_rate, action="append", default=[], metavar="LABEL=MBIT",
                   help="a reference line on the throughput panel, e.g. wifi=50 (repeatable)")
    p.add_argument("--title", help="the title above the plot")
    p.add_argument("--json", action="store_true", help="print what was plotted as JSON")
    p.set_defaults(func=_plot)
