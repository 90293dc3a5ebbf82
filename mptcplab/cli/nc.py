"""`mptcplab nc`: netcat over MPTCP, with its subflows live on stderr."""

from __future__ import annotations

import argparse
import socket

from mptcplab.cli.common import add_json, add_netns, netns_of, port, seconds
from mptcplab.errors import ExitStatus, LabError


def _nc(args: argparse.Namespace) -> int:
    from mptcplab.nc import NcOptions, nc

    words = list(args.words)
    if args.listen:
        if len(words) not in (1, 2):
            raise LabError("with -l give PORT, or HOST PORT to listen on one address",
                           ExitStatus.USAGE)
    elif len(words) != 2:
        raise LabError("give HOST PORT to connect to (or -l PORT to listen)", ExitStatus.USAGE)
    try:
        number = port(words[-1])
    except argparse.ArgumentTypeError as exc:
        raise LabError(f"PORT: {exc}", ExitStatus.USAGE) from None
    host = words[0] if len(words) == 2 else None
    if args.listen and args.source:
        if host:
            raise LabError("with -l, give the address as HOST or as -s, not both",
                           ExitStatus.USAGE)
        host = args.source
    if args.policy is not None and not args.policy.strip():
        raise LabError("--policy needs a policy name, e.g. --policy \"backup-preference "
                       "wlan0 wwan0\"", ExitStatus.USAGE)
    if args.policy and args.tcp:
        raise LabError("--policy steers MPTCP subflows; it means nothing with --tcp",
                       ExitStatus.USAGE)
    if args.policy and args.netns is None and not args.host:
        from mptcplab.cli.common import in_host_namespace  # the pm daemon's own rule

        if in_host_namespace():
            raise LabError("--policy switches the namespace to the userspace path manager "
                           "while nc runs; name a lab node with -n LAB:NODE, or say --host to "
                           "take over this machine's own", ExitStatus.USAGE)
    family = socket.AF_INET if args.ipv4 else socket.AF_INET6 if args.ipv6 else None
    return nc(NcOptions(host=host, port=number, listen=args.listen, netns=netns_of(args.netns),
                        source=None if args.listen else args.source, family=family,
                        tcp=args.tcp, subflows=args.subflows, json=args.json,
                        interval=args.interval, timeout=args.wait, verbose=args.verbose,
                        policy=args.policy, recv_only=args.recv_only,
                        send_only=args.send_only))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nc", help="netcat over MPTCP: stdin to the connection, the connection to stdout",
        usage="%(prog)s [-l] [-n NETNS|LAB:NODE] [-s ADDR] [-4|-6] [--tcp] "
              "[--recv-only|--send-only] [--subflows] [--json] [--policy 'NAME [ARGS]'] [HOST] PORT",
        description="Open an MPTCP connection (or accept one with -l) and copy standard input "
                    "to it and it to standard output, both ways at once. When standard input "
                    "ends the write side is shut down and reading goes on until the peer "
                    "closes. --subflows shows the connection's subflows on stderr about once a "
                    "second (kernel subflow id, addresses, backup, bytes, RTT, cwnd) and a final "
                    "table; a connection that fell back to plain TCP is said so.",
        epilog="Examples: `mptcplab nc -l --recv-only -n server 5000 > out` and `mptcplab nc -n client "
               "--subflows 10.0.1.2 5000 < file` in a two-paths lab. Exit codes: 0 done, 1 "
               "connection refused/reset or port in use, 2 usage, 3 bad address or namespace, "
               "4 needs root for -n, 5 no MPTCP in this kernel, 130 interrupted.")
    p.add_argument("words", nargs="+", metavar="[HOST] PORT",
                   help="where to connect; with -l, the port (and optionally the address) "
                        "to listen on")
    p.add_argument("-l", "--listen", action="store_true",
                   help="listen for one connection instead of connecting")
    add_netns(p)
    p.add_argument("-s", "--source", metavar="ADDR",
                   help="local address: the source of the connection, or with -l the address "
                        "to listen on")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    fam.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    p.add_argument("--tcp", action="store_true",
                   help="plain TCP instead of MPTCP (a peer that does not speak MPTCP)")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--recv-only", action="store_true",
                     help="only receive: leave stdin unread, end when the peer closes")
    way.add_argument("--send-only", action="store_true",
                     help="only send: discard what the peer sends")
    p.add_argument("--subflows", action="store_true",
                   help="show the subflows on stderr about once a second, and a final table")
    add_json(p, "--subflows as JSON lines on stderr (stdout carries the data)")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                   help="how often --subflows refreshes (default %(default)s)")
    p.add_argument("--policy", metavar="'NAME [ARGS]'",
                   help="steer this connection's subflows with a path-manager policy, as one "
                        "quoted word: 'backup-preference wlan0 wwan0' (WiFi carries the data, "
                        "cellular waits as backup), 'subflows N', 'ndiffports N', 'fullmesh' "
                        "or a FILE.py (docs/pm.md). While nc runs the namespace uses the "
                        "userspace path manager, so its other connections get no subflows; "
                        "the old one is put back at the end")
    p.add_argument("--host", action="store_true",
                   help="with --policy and no -n: take over this machine's own path manager "
                        "while nc runs")
    p.add_argument("-w", "--wait", type=seconds, metavar="SECONDS",
                   help="give up connecting after SECONDS")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say on stderr when listening, connected and from where")
    p.set_defaults(func=_nc)
