"""`mptcplab topo up/down/list/show`, `mptcplab clean` and `mptcplab exec`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mptcplab.errors import ExitStatus, LabError


def _topology(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The catalogue entry, the topology built with --set and --middlebox, the options used."""
    from mptcplab.topo import catalogue
    from mptcplab.topo.middlebox import from_spec

    entry = catalogue.entry(args.name)
    given = entry.parse_options(args.set)
    boxes = [from_spec(spec) for spec in args.middlebox]    # bad specs fail before building
    topo = entry.build(**given)
    for node, box in boxes:
        topo.middlebox(node, box)
    topo.check()
    return entry, topo, {**entry.options, **given}


def _addresses(node: dict) -> str:
    return "  ".join(f"{ifname} {' '.join(addrs)}" for ifname, addrs in node["interfaces"].items())


def _middlebox_words(desc: dict) -> str:
    return " ".join(desc["middleboxes"])


def topo_up(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mptcplab.topo import Lab

    _, topo, _ = _topology(args)
    lab = Lab(topo).start()
    lab_id = lab.detach()
    nodes = [{"node": h.name, "kind": h.node.kind, "netns": h.netns,
              "addresses": _addresses(n)}
             for h, n in zip(lab.hosts.values(), topo.describe()["nodes"])]
    if args.json:
        print(json.dumps({"id": lab_id, "topology": topo.name, "nodes": nodes}))
        return ExitStatus.OK
    print(f"{topo.name} is up as lab {lab_id}; take it down with: mptcplab topo down {lab_id}")
    print(tabulate([list(n.values()) for n in nodes],
                   headers=["node", "kind", "namespace", "addresses"]))
    print(f"run in a node: mptcplab exec {lab_id}:{nodes[0]['node']} COMMAND "
          f"(or a shell without COMMAND)")
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
    from tabulate import tabulate

    from mptcplab.topo import catalogue
    from mptcplab.topo.lifecycle import all_states

    states = all_states()
    topos = [{"name": e.name, "summary": e.summary, "file": str(e.path),
              "up": [s.id for s in states if s.detached and s.topology == e.name]}
             for e in catalogue.entries().values()]
    labs = [{"id": s.id, "topology": s.topology,
             "state": "up" if s.detached else
             (f"running (pid {s.pid})" if s.owner_alive else "left by a crash"),
             "owner": s.owner, "command": s.command, "nodes": s.nodes,
             "namespaces": s.namespaces} for s in states]
    if args.json:
        print(json.dumps({"topologies": topos, "labs": labs}))
        return ExitStatus.OK
    print(tabulate([[t["name"], t["summary"], " ".join(t["up"])] for t in topos],
                   headers=["topology", "description", "up"]))
    if labs:
        print()
        print(tabulate([[lb["id"], lb["topology"], lb["state"], lb["owner"] or "-",
                         " ".join(lb["nodes"])] for lb in labs],
                       headers=["lab", "topology", "state", "started by", "nodes"]))
    return ExitStatus.OK


def topo_show(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    entry, topo, used = _topology(args)
    desc = topo.describe()
    if args.json:
        desc["file"] = str(entry.path)
        desc["options"] = {k: used[k] for k in entry.settable()}
        print(json.dumps(desc))
        return ExitStatus.OK
    print(desc["doc"])
    print()
    print(tabulate([[n["name"], n["kind"], _addresses(n),
                     " ".join(f"{e['addr']}({','.join(e['flags'])})" for e in n["endpoints"]),
                     _middlebox_words(n)] for n in desc["nodes"]],
                   headers=["node", "kind", "addresses", "MPTCP endpoints", "middleboxes"]))
    print()
    print(tabulate([[lk["a"], lk["b"], lk["label"],
                     f"{lk['rate_bps'] / 1e6:g} Mbit/s" if lk["rate_bps"] else "-",
                     f"{lk['loss_pct']:g}%" if lk["loss_pct"] else "-"]
                    for lk in desc["links"]],
                   headers=["from", "to", "label", "rate", "loss"]))
    print("\noptions (--set NAME=VALUE): "
          + ", ".join(f"{k}={'none' if used[k] is None else used[k]}"
                      for k in entry.settable()))
    from mptcplab.topo.middlebox import KINDS

    print("middleboxes (--middlebox NODE:KIND[:ARG]): " + ", ".join(KINDS))
    return ExitStatus.OK


def clean(args: argparse.Namespace) -> int:
    from mptcplab.topo import clean as clean_labs

    report = clean_labs(everything=args.all, labs=args.labs or None)
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


def exec_in_node(args: argparse.Namespace) -> int:
    import os
    import shutil

    from mptcplab import privileges
    from mptcplab.errors import MissingTool
    from mptcplab.topo.lifecycle import resolve_node

    privileges.require("entering a lab node", privileges.CAP_SYS_ADMIN)
    netns = resolve_node(args.node)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        shell = os.environ.get("SHELL") or "/bin/sh"
        command = [shell]
        print(f"mptcplab: a shell in {netns} ({args.node}); `exit` to leave", flush=True)
    if shutil.which(command[0]) is None:
        raise LabError(f"{command[0]}: command not found", ExitStatus.MISSING_TOOL)
    ip = shutil.which("ip")
    if ip is None:
        raise MissingTool("ip not found: install the Debian package iproute2")
    env = dict(os.environ, MPTCPLAB_NETNS=netns, MPTCPLAB_NODE=args.node)
    # `ip netns exec` also mounts the namespace's own /sys (so `ls /sys/class/net` is right);
    # exec'ing it hands the terminal, signals and exit code over to the command.
    os.execve(ip, [ip, "netns", "exec", netns, *command], env)
    return ExitStatus.ERROR      # not reached


def _topology_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="catalogue name (see `topo list`) or path to a .py file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="topology option, e.g. --set rate=10mbit, --set checksum=true "
                        "(repeatable; `topo show NAME` lists them)")
    p.add_argument("--middlebox", action="append", default=[], metavar="NODE:KIND[:ARG]",
                   help="put a middlebox on a node, e.g. router:strip:syn-ack, "
                        "router:drop-mp-capable-syn, router:corrupt:70 (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    topo = sub.add_parser("topo", help="network-namespace topologies",
                          description="Bring catalogue topologies up and down, list and show them.")
    tsub = topo.add_subparsers(dest="topo_command", metavar="ACTION", required=True)
    p = tsub.add_parser("up", help="build a topology and leave it running",
                        description="Build a catalogue topology (or a .py file defining build()) "
                                    "in fresh namespaces and leave it up after the command.")
    _topology_args(p)
    p.add_argument("--json", action="store_true", help="print the lab as JSON")
    p.set_defaults(func=topo_up)
    p = tsub.add_parser("down", help="tear down a lab brought up with `topo up`",
                        description="Remove a lab brought up with `topo up` (by lab id, or by "
                                    "topology name when only one lab of it is up), stopping any "
                                    "process left inside it. Never more than one lab without "
                                    "--all: on a shared machine the others may be someone "
                                    "else's.")
    p.add_argument("target", nargs="?",
                   help="lab id, or a topology name when only one lab of it is up "
                        "(default: the only lab up)")
    p.add_argument("--all", action="store_true",
                   help="every lab brought up with `topo up`, whoever started it")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=topo_down)
    p = tsub.add_parser("list", help="list catalogue topologies and labs",
                        description="List the topology catalogue and the labs that exist, "
                                    "with who started each.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=topo_list)
    p = tsub.add_parser("show", help="describe a topology",
                        description="Print a topology's diagram, nodes, addresses, links and "
                                    "options (with --set and --middlebox applied).")
    _topology_args(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=topo_show)
    p = sub.add_parser("clean", help="remove what crashed labs left behind",
                       description="Remove lab namespaces (prefix mptl-) whose owning process is "
                                   "gone, and any lab link in the root namespace; never anything "
                                   "else. Labs of running processes and `topo up` labs are kept "
                                   "unless --all. With LAB ids, only those labs.")
    p.add_argument("labs", nargs="*", metavar="LAB", help="only these labs (ids)")
    p.add_argument("--all", action="store_true",
                   help="also remove labs of running processes and `topo up` labs")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=clean)
    p = sub.add_parser("exec", help="run a command (or a shell) in a lab node",
                       description="Run COMMAND in a lab node's network namespace, like `ip "
                                   "netns exec`, naming the node as LAB:NODE (or NODE when one "
                                   "running lab has it, or a namespace name). Without COMMAND, "
                                   "a shell. The exit code is the command's.",
                       usage="%(prog)s [LAB:]NODE [COMMAND ...]")
    p.add_argument("node", metavar="[LAB:]NODE", help="e.g. k3x9q:client, or client")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="the command and its arguments (default: $SHELL)")
    p.set_defaults(func=exec_in_node)
