"""`mptcplab sniff`: live and offline decoding, tracking and validation."""

from __future__ import annotations

import argparse

from mptcplab.cli.common import count


def _sniff(args: argparse.Namespace) -> int:
    from mptcplab.sniff import SniffOptions, sniff

    words = list(args.words)
    iface = args.interface
    if iface is None and args.read is None and words:
        iface = words.pop(0)
    return sniff(SniffOptions(iface=iface, read=args.read, netns=args.netns, write=args.write,
                              count=args.count, json=args.json, summary=args.summary,
                              bpf=" ".join(words), snaplen=args.snaplen,
                              buffer_kib=args.buffer_size))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sniff", help="capture or read MPTCP traffic: decode, track connections, validate",
        usage="%(prog)s [IFACE] [-r FILE] [-n NETNS] [-w FILE] [-c COUNT] [--json] "
              "[--summary] [FILTER ...]",
        description="Decode MPTCP live on an interface (in a lab node's namespace with -n) or "
                    "from a pcap/pcapng file (-r): one line per MPTCP segment with its "
                    "connection and subflow numbers, relative DSNs and HMAC/checksum verdicts, "
                    "then a summary of the connections (subflows grouped by token).",
        epilog="Exit codes: 0 done (also after Ctrl-C on a live capture), 2 usage or bad "
               "filter, 3 unreadable/truncated file or unknown interface/namespace, 4 not "
               "root for a live capture, 5 tcpdump/libpcap missing, 130 interrupted reading "
               "a file.")
    p.add_argument("words", nargs="*", metavar="IFACE/FILTER",
                   help="the interface to capture on (or `any`), then a BPF filter "
                        "expression as tcpdump takes it; with -r or -i, all words are the "
                        "filter")
    p.add_argument("-i", "--interface", metavar="IFACE", help="the interface (tcpdump's -i)")
    p.add_argument("-r", "--read", metavar="FILE", help="read a pcap or pcapng file")
    p.add_argument("-n", "--netns", metavar="NETNS",
                   help="capture inside this network namespace (e.g. a lab node's mptl-...)")
    p.add_argument("-w", "--write", metavar="FILE", help="also write the packets to a pcap")
    p.add_argument("-c", "--count", type=count, default=0, metavar="COUNT",
                   help="stop after COUNT packets (captured, or read and matching FILTER)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per MPTCP segment (see docs/sniff.md)")
    p.add_argument("--summary", action="store_true",
                   help="no per-packet output: only the summary (a JSON line with --json)")
    p.add_argument("-s", "--snaplen", type=count, default=262144, metavar="BYTES",
                   help="bytes kept of each packet in a live capture (default %(default)s; "
                        "DSS checksums need the payload)")
    p.add_argument("-B", "--buffer-size", type=count, default=65536, metavar="KIB",
                   help="kernel capture ring in KiB (default %(default)s)")
    p.set_defaults(func=_sniff, trailing_words="words")


