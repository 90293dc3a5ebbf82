"""`mptcplab pm ...`: the path manager, worded like `ip mptcp` (endpoint, limits, monitor) plus
the userspace-PM verbs and the daemon."""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
from collections.abc import Iterator
from typing import Any

from mptcplab.cli.common import (
    add_json,
    add_netns,
    count,
    in_host_namespace,
    netns_of,
    seconds,
)
from mptcplab.errors import BadInput, ExitStatus, LabError

FLAG_WORDS = ("signal", "subflow", "backup", "fullmesh", "laminar", "implicit")


def _usage(msg: str) -> LabError:
    return LabError(msg, ExitStatus.USAGE)


class Words:
    """ip-style keyword words: `10.0.2.1 id 3 port 1000 signal backup`."""

    def __init__(self, words: list[str], what: str) -> None:
        self.words = list(words)
        self.what = what

    def __bool__(self) -> bool:
        return bool(self.words)

    def take(self, key: str, kind: Any = str, name: str | None = None) -> Any:
        """The value after keyword `key` (removed from the words), or None."""
        if key not in self.words:
            return None
        i = self.words.index(key)
        if i + 1 >= len(self.words):
            raise _usage(f"{self.what}: {key} needs a value")
        raw = self.words[i + 1]
        del self.words[i:i + 2]
        return _convert(raw, kind, name or key)

    def flag(self, *names: str) -> str | None:
        for n in names:
            if n in self.words:
                self.words.remove(n)
                return n
        return None

    def rest(self) -> Iterator[str]:
        while self.words:
            yield self.words.pop(0)

    def done(self) -> None:
        if self.words:
            raise _usage(f"{self.what}: unexpected {' '.join(self.words)!r}")


def _convert(raw: str, kind: Any, name: str) -> Any:
    if kind is int:
        try:
            return int(raw, 0)
        except ValueError:
            raise _usage(f"{name} must be a whole number, got {raw!r}") from None
    if kind == "token":
        from mptcplab.pm import parse_token

        return parse_token(raw)
    return raw


def _is_addr(word: str) -> bool:
    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True


def _addr_port(word: str, what: str, need_port: bool = False) -> tuple[str, int | None]:
    """`10.0.1.1`, `10.0.1.1:5000`, `dead:beef::1`, `[dead:beef::1]:5000`."""
    port: int | None = None
    addr = word
    if word.startswith("["):
        addr, sep, tail = word[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise BadInput(f"{what}: bad address {word!r} (use [V6ADDR]:PORT)")
        if tail:
            port = _port(tail[1:], what)
    elif word.count(":") == 1:
        addr, _, p = word.partition(":")
        port = _port(p, what)
    if not _is_addr(addr):
        raise BadInput(f"{what}: {addr!r} is not an IPv4 or IPv6 address")
    if need_port and not port:
        raise _usage(f"{what}: {word} needs a port (ADDR:PORT, or [V6ADDR]:PORT)")
    return addr, port


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise BadInput(f"{what}: port {text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise BadInput(f"{what}: port {port} out of range 1-65535")
    return port


def _pm(args: argparse.Namespace) -> Any:
    from mptcplab.pm import PathManager

    netns = netns_of(args.netns)
    if netns is not None:
        from mptcplab import privileges

        privileges.require(f"entering namespace {netns}", privileges.CAP_SYS_ADMIN)
    return PathManager(netns)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def _done(args: argparse.Namespace, **fields: Any) -> int:
    if args.json:
        _print_json({"ok": True, **fields})
    return ExitStatus.OK


# -- endpoint ---------------------------------------------------------------------------------

def _ifnames(pm: Any) -> dict[int, str]:
    import socket

    from mptcplab.pm.client import in_netns

    try:
        return {i: n for i, n in in_netns(pm._fd, socket.if_nameindex)}
    except OSError:
        return {}


def _show_endpoints(args: argparse.Namespace, pm: Any, eps: list[dict[str, Any]]) -> int:
    from mptcplab.report.pm import endpoint_line

    names = _ifnames(pm) if any(e.get("ifindex") for e in eps) else {}
    if args.json:
        _print_json([dict(e, dev=names.get(e["ifindex"])) if e.get("ifindex") else e
                     for e in eps])
    else:
        for e in eps:
            print(endpoint_line(e, names.get(e.get("ifindex") or 0)))
    return ExitStatus.OK


def endpoint_add(args: argparse.Namespace) -> int:
    w = Words(args.words, "endpoint add")
    id_ = w.take("id", int)
    port = w.take("port", int)
    dev = w.take("dev")
    flags = []
    while (f := w.flag(*FLAG_WORDS)) is not None:
        flags.append(f)
    addrs = list(w.rest())
    if not addrs:
        raise _usage("endpoint add: give one ADDRESS, e.g. endpoint add 10.0.2.1 subflow")
    for word in addrs[1:] + ([] if _is_addr(addrs[0]) or any(c in addrs[0] for c in ".:")
                             else addrs[:1]):
        if not _is_addr(word):
            raise _usage(f"endpoint add: unknown word {word!r} (flags: "
                         f"{', '.join(FLAG_WORDS[:5])}; id N, port P, dev IFACE)")
    if len(addrs) > 1:
        raise _usage(f"endpoint add: one ADDRESS only, got {' '.join(addrs)}")
    if not _is_addr(addrs[0]):
        raise BadInput(f"endpoint add: {addrs[0]!r} is not an IPv4 or IPv6 address")
    if "signal" in flags and "fullmesh" in flags:
        raise BadInput("endpoint add: an endpoint cannot be both signal and fullmesh")
    if port and "signal" not in flags:
        raise BadInput("endpoint add: a port needs the signal flag (it is announced)")
    with _pm(args) as pm:
        ep = pm.endpoint_add(addrs[0], id=id_, port=port, flags=flags, dev=dev)
        if args.json:
            return _show_endpoints(args, pm, [ep])
    return ExitStatus.OK


def endpoint_del(args: argparse.Namespace) -> int:
    w = Words(args.words, "endpoint del")
    id_ = w.take("id", int)
    rest = list(w.rest())
    addr = None
    for word in rest:
        if id_ is None and word.isdigit():
            id_ = int(word)
        elif addr is None and _is_addr(word):
            addr = word
        else:
            raise _usage(f"endpoint del: unexpected {word!r}")
    if id_ is None:
        raise _usage("endpoint del: which id? (endpoint del ID [ADDRESS])")
    with _pm(args) as pm:
        pm.endpoint_del(id_, addr)
    return _done(args, deleted=id_)


def endpoint_show(args: argparse.Namespace) -> int:
    w = Words(args.words, "endpoint show")
    token = w.take("token", "token")
    id_ = w.take("id", int)
    for word in w.rest():
        if id_ is None and word.isdigit():
            id_ = int(word)
        else:
            raise _usage(f"endpoint show: unexpected {word!r}")
    with _pm(args) as pm:
        if id_ is not None:
            eps = [pm.endpoint_get(id_, token)]
        else:
            eps = pm.endpoints(token)
        return _show_endpoints(args, pm, eps)


def endpoint_flush(args: argparse.Namespace) -> int:
    Words(args.words, "endpoint flush").done()
    with _pm(args) as pm:
        pm.endpoint("flush")
    return _done(args)


def endpoint_change(args: argparse.Namespace) -> int:
    w = Words(args.words, "endpoint change")
    id_ = w.take("id", int)
    port = w.take("port", int)
    backup = fullmesh = None
    addr = None
    for word in w.rest():
        if word in ("backup", "nobackup"):
            backup = word == "backup"
        elif word in ("fullmesh", "nofullmesh"):
            fullmesh = word == "fullmesh"
        elif id_ is None and addr is None and word.isdigit():
            id_ = int(word)
        elif addr is None and id_ is None and _is_addr(word):
            addr = word
        elif word in FLAG_WORDS:
            raise BadInput(f"endpoint change: only backup/nobackup and fullmesh/nofullmesh "
                           f"can change, not {word}")
        else:
            raise _usage(f"endpoint change: unexpected {word!r}")
    if backup is None and fullmesh is None:
        raise _usage("endpoint change: say what changes: backup, nobackup, fullmesh or "
                     "nofullmesh")
    with _pm(args) as pm:
        ep = pm.endpoint_change(id_, addr, port, backup, fullmesh)
        if args.json:
            return _show_endpoints(args, pm, [ep])
    return ExitStatus.OK


# -- limits -----------------------------------------------------------------------------------

def limits(args: argparse.Namespace) -> int:
    from mptcplab.report.pm import limits_line

    words = list(args.words)
    verb = words.pop(0) if words and words[0] in ("set", "show") else "show"
    w = Words(words, f"limits {verb}")
    kw = {}
    if verb == "set":
        kw = {"subflows": w.take("subflows", int),
              "add_addr_accepted": w.take("add_addr_accepted", int)}
        if kw["subflows"] is None and kw["add_addr_accepted"] is None:
            raise _usage("limits set: give subflows N and/or add_addr_accepted N")
    w.done()
    with _pm(args) as pm:
        now = pm.limits(verb, **kw)
    if args.json:
        _print_json(now)
    elif verb == "show":
        print(limits_line(now))
    return ExitStatus.OK


# -- monitor ----------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _raise_stop(*_: Any) -> None:
    raise _Stop


def monitor(args: argparse.Namespace) -> int:
    from mptcplab.report.contract import json_line
    from mptcplab.report.pm import event_json, event_line

    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    seen = 0
    try:
        with _pm(args) as pm:
            pm.subscribe()
            if args.ready:
                print("monitoring", file=sys.stderr, flush=True)
            for ev in pm.events(timeout=args.timeout):
                print(json_line(event_json(ev)) if args.json else event_line(ev), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    break
    except (KeyboardInterrupt, _Stop):
        pass
    except OSError as exc:
        import errno

        if exc.errno != errno.ENOBUFS:
            raise
        raise LabError("events were lost: the kernel's queue for this monitor overflowed "
                       "(ENOBUFS)") from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return ExitStatus.OK


# -- userspace path manager -----------------------------------------------------------------------

def _token(w: Words) -> int:
    token = w.take("token", "token")
    if token is None:
        raise _usage(f"{w.what}: which connection? add `token T` (as `pm monitor` prints it)")
    return token


def announce(args: argparse.Namespace) -> int:
    w = Words(args.words, "announce")
    token = _token(w)
    id_ = w.take("id", int)
    port = w.take("port", int)
    dev = w.take("dev")
    rest = list(w.rest())
    if len(rest) != 1:
        raise _usage("announce: give one ADDRESS[:PORT] (announce ADDR id N token T)")
    addr, p = _addr_port(rest[0], "announce")
    if id_ is None:
        raise _usage("announce: the address needs an id (id N, 1-255)")
    with _pm(args) as pm:
        pm.announce(token, addr, id_, port=p or port, dev=dev)
    return _done(args)


def remove(args: argparse.Namespace) -> int:
    w = Words(args.words, "remove")
    token = _token(w)
    id_ = w.take("id", int)
    w.done()
    if id_ is None:
        raise _usage("remove: which address id? (remove id N token T)")
    with _pm(args) as pm:
        pm.remove(token, id_)
    return _done(args)


def subflow(args: argparse.Namespace) -> int:
    words = list(args.words)
    if not words or words[0] not in ("create", "destroy", "show"):
        raise _usage("subflow: create, destroy or show (see `mptcplab pm subflow -h`)")
    verb = words.pop(0)
    w = Words(words, f"subflow {verb}")
    if verb == "show":
        token = w.take("token", "token")
        w.done()
        return _subflow_show(args, token)
    token = _token(w)
    if verb == "create":
        id_ = w.take("id", int)
        dev = w.take("dev")
        backup = w.flag("backup") is not None
        rest = list(w.rest())
        if len(rest) != 2:
            raise _usage("subflow create: give LOCAL[:PORT] REMOTE:PORT")
        (laddr, lport), (raddr, rport) = (_addr_port(rest[0], "subflow create"),
                                          _addr_port(rest[1], "subflow create", True))
        with _pm(args) as pm:
            pm.subflow_create(token, laddr, raddr, rport, local_id=id_, local_port=lport,
                              dev=dev, backup=backup)
        return _done(args)
    rest = list(w.rest())
    if len(rest) != 2:
        raise _usage("subflow destroy: give LOCAL:PORT REMOTE:PORT")
    (laddr, lport), (raddr, rport) = (_addr_port(rest[0], "subflow destroy", True),
                                      _addr_port(rest[1], "subflow destroy", True))
    with _pm(args) as pm:
        pm.subflow_destroy(token, laddr, lport, raddr, rport)
    return _done(args)


def _subflow_show(args: argparse.Namespace, token: int | None) -> int:
    from tabulate import tabulate

    from mptcplab import sockdiag
    from mptcplab.pm.client import open_netns

    netns = netns_of(args.netns)
    fd, own = open_netns(netns)
    try:
        subs = sockdiag.subflows(fd, token)
    finally:
        if own and fd is not None:
            import os

            os.close(fd)

    def counted(s: sockdiag.DiagSubflow, name: str) -> int | None:
        return getattr(s.tcp_info, name, None) if s.tcp_info is not None else None

    rows = [{"token": s.token_loc, "saddr": s.local.addr, "sport": s.local.port,
             "daddr": s.remote.addr, "dport": s.remote.port, "loc_id": s.id_loc,
             "rem_id": s.id_rem, "backup": s.backup_local, "state": s.state,
             "bytes_acked": counted(s, "tcpi_bytes_acked"),
             "bytes_received": counted(s, "tcpi_bytes_received")} for s in subs]
    if args.json:
        _print_json(rows)
        return ExitStatus.OK
    print(tabulate([[f"{r['token']:08x}", f"{r['saddr']}:{r['sport']}",
                     f"{r['daddr']}:{r['dport']}", r["loc_id"], r["rem_id"],
                     "backup" if r["backup"] else "", r["bytes_acked"], r["bytes_received"]]
                    for r in rows],
                   headers=["token", "local", "remote", "locid", "remid", "", "bytes_acked",
                            "bytes_received"]))
    return ExitStatus.OK


def set_flags(args: argparse.Namespace) -> int:
    w = Words(args.words, "set-flags")
    token = _token(w)
    which = w.flag("backup", "nobackup")
    if which is None:
        raise _usage("set-flags: backup or nobackup?")
    rest = list(w.rest())
    if len(rest) != 2:
        raise _usage("set-flags: give LOCAL[:PORT] REMOTE[:PORT]")
    (laddr, lport), (raddr, rport) = (_addr_port(rest[0], "set-flags"),
                                      _addr_port(rest[1], "set-flags"))
    with _pm(args) as pm:
        pm.set_flags(token, laddr, raddr, which == "backup", local_port=lport,
                     remote_port=rport)
    return _done(args)


# -- daemon -----------------------------------------------------------------------------------

def daemon(args: argparse.Namespace) -> int:
    from mptcplab.pm.daemon import Daemon
    from mptcplab.pm.policy import make_policy
    from mptcplab.report.contract import json_line
    from mptcplab.report.pm import record_line

    if not args.policy:
        raise _usage("daemon: which policy? --policy NAME [ARGS] (subflows N, ndiffports N, "
                     "fullmesh, backup-preference PRIMARY BACKUP, or FILE.py)")
    spec, *words = args.policy + args.words
    policy = make_policy(spec, words)
    netns = netns_of(args.netns)
    from mptcplab import privileges

    privileges.require("the path-manager daemon", privileges.CAP_NET_ADMIN,
                       *((privileges.CAP_SYS_ADMIN,) if netns is not None else ()))
    if netns is None and not args.host and in_host_namespace():
        raise _usage("daemon: the daemon switches its namespace to the userspace path manager; "
                     "name a lab node with -n LAB:NODE, or say --host to take over this "
                     "machine's own")

    lines: list[str] = []

    def emit(rec: dict[str, Any]) -> None:
        lines.append(json_line(rec) if args.json else record_line(rec))

    def flush() -> None:            # one write per turn of the loop, not one per record
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            lines.clear()

    try:
        Daemon(policy, netns, on_record=emit, on_idle=flush, rcvbuf=args.rcvbuf,
               verbose=args.verbose).run(duration=args.duration, install_signals=True)
    finally:
        flush()
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    pm = sub.add_parser(
        "pm", help="the path manager: endpoints, limits, events, userspace PM, daemon",
        description="MPTCP path management over the kernel's mptcp_pm netlink family, "
                    "worded like `ip mptcp`. Every command takes -n NETNS|LAB:NODE|NODE and "
                    "--json.",
        epilog="Exit codes: 0 ok, 1 the kernel refused for another reason, 2 usage, 3 bad "
               "value (unknown token, id, address, interface), 4 not root, 5 the kernel "
               "lacks the command or flag.")
    psub = pm.add_subparsers(dest="pm_command", metavar="COMMAND", required=True)

    def cmd(parent: Any, name: str, func: Any, help: str, usage: str,
            description: str = "", words: bool = True, aliases: tuple[str, ...] = ()
            ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, usage=f"%(prog)s {usage}",
                              description=description or help, aliases=list(aliases))
        if words:
            p.add_argument("words", nargs="*", metavar="WORD", help=argparse.SUPPRESS)
        add_netns(p)
        add_json(p)
        p.set_defaults(func=func)
        return p

    ep = psub.add_parser("endpoint", help="in-kernel PM endpoints (ip mptcp endpoint)",
                         description="Endpoints of the in-kernel path manager.")
    esub = ep.add_subparsers(dest="ep_command", metavar="ACTION", required=True)
    cmd(esub, "add", endpoint_add, "add an endpoint",
        "ADDRESS [id N] [port P] [dev IFACE] [signal] [subflow] [backup] [fullmesh] "
        "[laminar]",
        "Add an endpoint. Without an id (or with id 0) the kernel chooses one; the "
        "endpoint is printed with --json as the kernel stored it.")
    cmd(esub, "del", endpoint_del, "delete an endpoint", "ID [ADDRESS]",
        "Delete the endpoint with this id (id 0, the initial subflow's address, needs the "
        "ADDRESS too).", aliases=("delete",))
    cmd(esub, "show", endpoint_show, "list endpoints", "[ID] [token T]",
        "List the endpoints, one, or (token T, userspace PM) a connection's local "
        "addresses.", aliases=("list",))
    cmd(esub, "flush", endpoint_flush, "delete every endpoint", "")
    cmd(esub, "change", endpoint_change, "change an endpoint's backup/fullmesh flag",
        "ID|ADDRESS [port P] [backup|nobackup] [fullmesh|nofullmesh]",
        "Change the backup and/or fullmesh flag of an endpoint; a flag not named keeps its "
        "value. Connections using it get MP_PRIO.")
    cmd(psub, "limits", limits, "in-kernel PM limits (ip mptcp limits)",
        "[show | set [subflows N] [add_addr_accepted N]]",
        "Show or set the in-kernel path manager's limits (the kernel caps them at 8).")
    p = cmd(psub, "monitor", monitor, "print path-manager events as they happen",
            "[-c COUNT] [--timeout S] [--json]",
            "Print the mptcp_pm events of the namespace, one line each as `ip mptcp monitor` "
            "prints them (--json: one object per event). Stops on Ctrl-C/SIGTERM (exit 0).",
            words=False)
    p.add_argument("-c", "--count", type=count, default=0, help="stop after COUNT events")
    p.add_argument("--timeout", type=seconds, default=None, metavar="S",
                   help="stop after S seconds")
    p.add_argument("--ready", action="store_true",
                   help="say `monitoring` on stderr once subscribed (for scripts)")
    cmd(psub, "announce", announce, "userspace PM: announce an address (ADD_ADDR)",
        "ADDRESS[:PORT] id N [dev IFACE] token T")
    cmd(psub, "remove", remove, "userspace PM: withdraw an address (REMOVE_ADDR)",
        "id N token T")
    cmd(psub, "subflow", subflow, "userspace PM: create, destroy or show subflows",
        "create LOCAL[:PORT] REMOTE:PORT [id N] [dev IFACE] [backup] token T | "
        "destroy LOCAL:PORT REMOTE:PORT token T | show [token T]",
        "create: open a subflow of connection T (MP_JOIN, B flag with backup); destroy: "
        "close one; show: the subflows of the namespace (sock_diag), with ids and bytes. "
        "IPv6 with a port: [ADDR]:PORT.")
    cmd(psub, "set-flags", set_flags, "userspace PM: mark a subflow backup or not (MP_PRIO)",
        "LOCAL[:PORT] REMOTE[:PORT] backup|nobackup token T")
    p = cmd(psub, "daemon", daemon, "run a path-manager policy as a userspace PM",
            "--policy NAME [ARGS] [-n NETNS] [--json] [-v]",
            "Switch the namespace to the userspace path manager, learn the connections "
            "already open, and run a policy on every event and link/address change until "
            "SIGTERM/Ctrl-C, which puts the old path manager back. Policies: subflows N, "
            "ndiffports N, fullmesh, backup-preference PRIMARY BACKUP, or a FILE.py "
            "defining a Policy subclass (docs/pm.md).")
    p.add_argument("--policy", nargs="+", metavar=("NAME", "ARG"), default=[],
                   help="the policy and its arguments")
    p.add_argument("-v", "--verbose", action="store_true", help="log every event too")
    p.add_argument("--rcvbuf", type=count, default=4 << 20, metavar="BYTES",
                   help="kernel buffer for the event subscription (default %(default)s); "
                        "when it overflows the daemon resyncs from sock_diag")
    p.add_argument("--duration", type=seconds, default=None, metavar="S",
                   help="stop after S seconds")
    p.add_argument("--host", action="store_true",
                   help="without -n: take over this machine's own path manager (the daemon "
                        "switches it to userspace for every MPTCP connection until it stops)")
