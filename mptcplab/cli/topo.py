"""`mptcplab topo up/down/list/show`, `mptcplab clean` and `mptcplab exec`."""

from __future__ import annotations

import argparse

from mptcplab.errors import ExitStatus, LabError


def register(sub: argparse._SubParsersAction) -> None:
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

        gone = down(args.target, everything=args.all)
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
                 "owner": s.owner, "command": s.command,
                 "namespaces": s.namespaces} for s in states]
        if args.json:
            print(json.dumps({"topologies": topos, "labs": labs}))
            return ExitStatus.OK
        print(tabulate([[t["name"], t["summary"], " ".join(t["up"])] for t in topos],
                       headers=["topology", "description", "up"]))
        if labs:
            print()
            print(tabulate([[lb["id"], lb["topology"], lb["state"], lb["owner"] or "-",
                             " ".join(n.partition(lb["id"] + "-")[2] for n in lb["namespaces"])]
                            for lb in labs], headers=["lab", "topology", "state", "started by",
                                                      "nodes"]))
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
    p.add_argument("target", nargs="?",
                   help="lab id, or a topology name when only one lab of it is up "
                        "(default: the only lab up)")
    p.add_argument("--all", action="store_true",
                   help="every lab brought up with `topo up`, whoever started it")
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


