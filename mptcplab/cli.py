"""The `mptcplab` command: argparse -> one API call -> a report. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from mptcplab.errors import ExitStatus, LabError


def _add_topo_commands(sub: argparse._SubParsersAction) -> None:
    """`topo up/down/list/show` and `clean` (topology issue)."""
    import ast
    import json

    from tabulate import tabulate

    def options(pairs: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key.isidentifier():
                raise LabError(f"--set wants NAME=VALUE, got {pair!r}", ExitStatus.USAGE)
            try:
                out[key] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                out[key] = raw
        return out

    def addresses(node: dict) -> str:
        return "  ".join(f"{ifname} {' '.join(addrs)}"
                         for ifname, addrs in node["interfaces"].items())

    def topo_up(args: argparse.Namespace) -> int:
        from mptcplab.topo import Lab, catalogue

        topo = catalogue.get(args.name, **options(args.set))
        lab = Lab(topo).start()
        lab_id = lab.detach()
        nodes = [{"node": h.name, "kind": h.node.kind, "netns": h.netns,
                  "addresses": addresses(n)}
                 for h, n in zip(lab.hosts.values(), topo.describe()["nodes"])]
        if args.json:
            print(json.dumps({"id": lab_id, "topology": topo.name, "nodes": nodes}))
        else:
            print(f"{topo.name} is up as lab {lab_id}; take it down with: "
                  f"mptcplab topo down {lab_id}")
            print(tabulate([list(n.values()) for n in nodes],
                           headers=["node", "kind", "namespace", "addresses"]))
            print(f"run in a node: ip netns exec {nodes[0]['netns']} COMMAND")
        return ExitStatus.OK

    def topo_down(args: argparse.Namespace) -> int:
        from mptcplab.topo import down

        gone = down("all" if args.all else args.target)
        if args.json:
            print(json.dumps([{"id": s.id, "topology": s.topology} for s in gone]))
        else:
            for s in gone:
                print(f"lab {s.id} ({s.topology}) is down")
        return ExitStatus.OK

    def topo_list(args: argparse.Namespace) -> int:
        from mptcplab.topo import catalogue
        from mptcplab.topo.lifecycle import all_states

        states = all_states()
        topos = [{"name": e.name, "summary": e.summary, "file": str(e.path),
                  "up": [s.id for s in states if s.detached and s.topology == e.name]}
                 for e in catalogue.entries().values()]
        labs = [{"id": s.id, "topology": s.topology,
                 "state": "up" if s.detached else
                 (f"running (pid {s.pid})" if s.owner_alive else "left by a crash"),
                 "namespaces": s.namespaces} for s in states]
        if args.json:
            print(json.dumps({"topologies": topos, "labs": labs}))
            return ExitStatus.OK
        print(tabulate([[t["name"], t["summary"], " ".join(t["up"])] for t in topos],
                       headers=["topology", "description", "up"]))
        if labs:
            print()
            print(tabulate([[lb["id"], lb["topology"], lb["state"]] for lb in labs],
                           headers=["lab", "topology", "state"]))
        return ExitStatus.OK

    def topo_show(args: argparse.Namespace) -> int:
        from mptcplab.topo import catalogue

        entry = catalogue.entry(args.name)
        topo = entry.build(**options(args.set))
        topo.check()
        desc = topo.describe()
        if args.json:
            desc["file"], desc["options"] = str(entry.path), {
                k: repr(v) for k, v in entry.options.items()}
            print(json.dumps(desc))
            return ExitStatus.OK
        print(desc["doc"])
        print()
        print(tabulate([[n["name"], n["kind"], addresses(n),
                         " ".join(f"{e['addr']}({','.join(e['flags'])})" for e in n["endpoints"]),
                         " ".join(n["middleboxes"])] for n in desc["nodes"]],
                       headers=["node", "kind", "addresses", "MPTCP endpoints", "middleboxes"]))
        print()
        print(tabulate([[lk["a"], lk["b"], lk["label"],
                         f"{lk['rate_bps'] / 1e6:g} Mbit/s" if lk["rate_bps"] else "-",
                         f"{lk['loss_pct']:g}%" if lk["loss_pct"] else "-"]
                        for lk in desc["links"]],
                       headers=["from", "to", "label", "rate", "loss"]))
        print("\noptions (--set NAME=VALUE): "
              + ", ".join(f"{k}={v!r}" for k, v in entry.options.items()))
        return ExitStatus.OK

    def clean(args: argparse.Namespace) -> int:
        from mptcplab.topo import clean as clean_labs

        report = clean_labs(everything=args.all)
        if args.json:
            print(json.dumps(report.__dict__))
            return ExitStatus.OK
        for name in report.namespaces:
            print(f"removed namespace {name}")
        for name in report.links:
            print(f"removed link {name}")
        if report.kept:
            print(f"kept {len(report.kept)} namespace(s) of running or `topo up` labs "
                  "(--all removes them too)")
        if not (report.namespaces or report.links):
            print("nothing to clean")
        return ExitStatus.OK

    topo = sub.add_parser("topo", help="network-namespace topologies",
                          description="Bring catalogue topologies up and down, list and show them.")
    tsub = topo.add_subparsers(dest="topo_command", metavar="ACTION", required=True)
    p = tsub.add_parser("up", help="build a topology and leave it running",
                        description="Build a catalogue topology (or a .py file defining build()) "
                                    "in fresh namespaces and leave it up after the command.")
    p.add_argument("name", help="catalogue name (see `topo list`) or path to a .py file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="topology option, e.g. --set rate=10mbit (repeatable)")
    p.add_argument("--json", action="store_true", help="print the lab as JSON")
    p.set_defaults(func=topo_up)
    p = tsub.add_parser("down", help="tear down a lab brought up with `topo up`",
                        description="Remove a lab brought up with `topo up` (by lab id or "
                                    "topology name), stopping any process left inside it.")
    p.add_argument("target", nargs="?", help="lab id or topology name (default: the only one)")
    p.add_argument("--all", action="store_true", help="every lab brought up with `topo up`")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=topo_down)
    p = tsub.add_parser("list", help="list catalogue topologies and labs",
                        description="List the topology catalogue and the labs that exist.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=topo_list)
    p = tsub.add_parser("show", help="describe a topology",
                        description="Print a topology's diagram, nodes, addresses and links.")
    p.add_argument("name", help="catalogue name or path to a .py file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="topology option (repeatable)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=topo_show)
    p = sub.add_parser("clean", help="remove what crashed labs left behind",
                       description="Remove lab namespaces (prefix mptl-) whose owning process is "
                                   "gone, and any lab link in the root namespace; never anything "
                                   "else. Labs of running processes and `topo up` labs are kept "
                                   "unless --all.")
    p.add_argument("--all", action="store_true",
                   help="also remove labs of running processes and `topo up` labs")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=clean)


def _count(text: str) -> int:
    """A packet count for -c: a whole number, 0 meaning no limit."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _decode(args: argparse.Namespace) -> int:
    from mptcplab.decode import decode_file
    from mptcplab.report import json_line, segment_line

    shown = 0
    for seg in decode_file(args.file, mptcp_only=not args.all, fast=args.fast):
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
    p.add_argument("--fast", action="store_true",
                   help="decode with the struct path instead of Scapy and the layers "
                        "(same output, many times faster)")
    p.add_argument("-c", "--count", type=_count, default=0, metavar="N",
                   help="stop after N segments")
    p.set_defaults(func=_decode)


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


def _add_sniff_command(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("-c", "--count", type=_count, default=0, metavar="COUNT",
                   help="stop after COUNT packets (captured, or read and matching FILTER)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per MPTCP segment (see docs/sniff.md)")
    p.add_argument("--summary", action="store_true",
                   help="no per-packet output: only the summary (a JSON line with --json)")
    p.add_argument("-s", "--snaplen", type=_count, default=262144, metavar="BYTES",
                   help="bytes kept of each packet in a live capture (default %(default)s; "
                        "DSS checksums need the payload)")
    p.add_argument("-B", "--buffer-size", type=_count, default=65536, metavar="KIB",
                   help="kernel capture ring in KiB (default %(default)s)")
    p.set_defaults(func=_sniff, trailing_words="words")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mptcplab", description="A lab for Multipath TCP on a real Linux kernel.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_decode_command(sub)
    _add_sniff_command(sub)
    _add_topo_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
