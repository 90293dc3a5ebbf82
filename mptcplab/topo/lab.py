"""`with Lab(topology) as lab:` builds the declared topology in fresh namespaces and always
tears it down: on return, on an exception, on Ctrl-C, on SIGTERM/SIGHUP, and at interpreter exit.

Build order (one thread hop per namespace, one netlink socket per namespace, no fork):
check the declaration and the machine -> write the state file -> create namespaces (base sysctls,
netlink socket) -> veth pairs created directly with their peer in the other namespace (nothing
ever appears in the root namespace) -> addresses, up, qdiscs -> routes and source rules ->
sysctls, offloads, nftables -> MPTCP limits and endpoints.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import sys
import weakref
from collections.abc import Iterator
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from mptcplab.errors import LabError, MissingTool
from mptcplab import namespaces as ns
from mptcplab.pm import netlink as pm_netlink
from mptcplab.topo import lifecycle, middlebox, rtnl
from mptcplab.topo.host import LabHost
from mptcplab.topo.model import Link, NodePlan, Topology, mptcp_sysctl_names
from mptcplab.topo.naming import new_lab_id, ns_name
from mptcplab.topo.rtnl import Batch

FIRST_IFINDEX = 100
# Written in every namespace as it is created. A new namespace inherits the root namespace's
# IPv4 settings (net.core.devconf_inherit_init_net=0), so pin what the lab relies on: no reverse
# path filter (a subflow may arrive on another interface than its source's, as in mptcp_join.sh),
# forwarding only on routers, and no IPv6 duplicate address detection (addresses usable at once).
BASE_SYSCTLS = {
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
}
HOST_SYSCTLS = {
    "net/ipv4/ip_forward": "0",
    "net/ipv6/conf/all/forwarding": "0",
}
ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
}
TBF_LATENCY = "50ms"
TBF_MIN_BURST = 64 * 1024           # one full GSO segment: tbf would split larger ones
NETEM_MISSING = ("link delay/jitter needs the netem qdisc (sch_netem), which this kernel lacks; "
                 "drop delay= (rate= and loss= work), or run on a kernel that has it in a VM: "
                 "mptcplab vm run --kernel 6.12 -- COMMAND")

_running: weakref.WeakSet[Lab] = weakref.WeakSet()
_netem: bool | None = None


def _write_sysctls(values: dict[str, object]) -> None:
    for rel, value in values.items():
        with open(f"/proc/sys/{rel}", "w") as f:
            f.write(str(value))


def _new_ns_setup(sysctls: dict[str, str]) -> socket.socket:
    """Runs inside a just-created namespace: base sysctls, then its rtnetlink socket."""
    _write_sysctls(sysctls)
    return rtnl.open_socket(rtnl.NETLINK_ROUTE)


def netem_available() -> bool:
    """Probe (once) for netem by adding it to `lo` of a throwaway, unnamed namespace."""
    global _netem
    if _netem is None:
        def probe() -> bool:
            ns.unshare_here()
            with IPRoute() as ipr:
                try:
                    ipr.tc("add", "netem", 1, delay=1000)
                except NetlinkError:
                    return False
            return True

        _netem = ns.in_thread(probe)
    return _netem


class Lab:
    """A running topology. `lab["client"]` is a LabHost; `lab.id` names its namespaces."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.id = ""
        self.hosts: dict[str, LabHost] = {}
        self._state: lifecycle.LabState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socks: list[socket.socket] = []
        self._planned: list[str] = []
        self._created: list[str] = []
        self._fds: list[int] = []
        self._started = False
        self._holding = False

    def __getitem__(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no node {name!r} in lab {self.topology.name} "
                           f"(nodes: {', '.join(self.hosts)})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.hosts

    def __repr__(self) -> str:
        return f"<Lab {self.topology.name} id={self.id or '-'} nodes={list(self.hosts)}>"

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """One asyncio loop shared by the pyroute2 objects handed out by the hosts."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.stop()
        if isinstance(exc, lifecycle.LabTerminated) and not exc.reported:
            exc.reported = True
            print(f"mptcplab: {exc}; lab {self.id} ({self.topology.name}) removed",
                  file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        with lifecycle.deferred_signals():
            yield

    # -- checks before anything exists -----------------------------------------------------

    def preflight(self) -> None:
        """Every check that can fail without creating anything: declaration, root, tools."""
        topo = self.topology
        topo.check()
        lifecycle.require_root("building a lab")
        if topo.uses_nft() and shutil.which("nft") is None:
            raise MissingTool(f"{topo.name} uses loss or middleboxes, which need nft: install "
                              "the Debian package nftables")
        if any(n.mptcp or n.endpoints or n.limits for n in topo.nodes.values()) \
                and not mptcp_sysctl_names():
            raise MissingTool("this kernel has no MPTCP (no /proc/sys/net/mptcp)")
        if topo.uses_netem() and not netem_available():
            raise MissingTool(NETEM_MISSING)

    # -- build ------------------------------------------------------------------------------

    def start(self) -> Lab:
        """Build the lab. On any failure or interrupt, remove what was built and re-raise."""
        if self._started:
            return self
        self.preflight()
        self._started = True
        _running.add(self)
        lifecycle.hold_termination()
        self._holding = True
        try:
            self._build()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, (NetlinkError, OSError)) and not isinstance(exc, LabError):
                raise LabError(f"building {self.topology.name}: {exc}") from exc
            raise
        return self

    def _build(self) -> None:
        topo = self.topology
        plans = topo.plan()
        for _attempt in range(5):
            self.id = new_lab_id()
            self._planned = [ns_name(self.id, n) for n in topo.nodes]
            if not any(os.path.exists(os.path.join(ns.NETNS_DIR, p)) for p in self._planned):
                break
        else:
            self._planned = []
            raise LabError("five fresh lab ids in a row collided with existing namespaces")
        with self._step():
            self._state = lifecycle.LabState.new(self.id, topo.name, self._planned)
            self._state.save()

        self.hosts = {}
        rt: dict[str, socket.socket] = {}
        for (name, node), nsname in zip(topo.nodes.items(), self._planned):
            sysctls = dict(BASE_SYSCTLS, **(ROUTER_SYSCTLS if node.is_router else HOST_SYSCTLS))
            with self._step():
                try:
                    fd, sock = ns.create(nsname, lambda s=sysctls: _new_ns_setup(s))
                except FileExistsError:
                    # someone else's: teardown must not remove it (the rest of _planned
                    # stays, a namespace whose set-up failed halfway is ours to remove)
                    self._planned.remove(nsname)
                    raise LabError(f"namespace {nsname} appeared while the lab was being "
                                   "built") from None
                self._created.append(nsname)
                self._fds.append(fd)
                self.hosts[name] = LabHost(self, node, nsname, fd)
                self._socks.append(sock)
            rt[name] = sock

        # Interface indexes are chosen, not looked up: node's k-th link is FIRST_IFINDEX + k.
        index = {name: {"lo": 1} for name in topo.nodes}
        for name in topo.nodes:
            for k, ln in enumerate(topo.links_of(name)):
                index[name][ln.side(name)[0]] = FIRST_IFINDEX + k
        veths = {name: Batch(sock, name) for name, sock in rt.items()}
        for ln in topo.links:
            veths[ln.a].veth(ln.a_if, index[ln.a][ln.a_if], ln.b_if, index[ln.b][ln.b_if],
                             self.hosts[ln.b].fd, ln.mtu)
        for batch in veths.values():
            batch.commit()

        for name, plan in plans.items():
            batch = Batch(rt[name], name)
            self._configure(batch, plan, index[name])
            for ln in topo.links_of(name):
                ifname = ln.side(name)[0]
                self._shape(batch, index[name][ifname], ifname, ln)
            batch.commit()

        offload_off = any(mb.disables_checksum_offload for n in topo.nodes.values()
                          for mb in n.middleboxes)
        for name, host in self.hosts.items():
            self._finish_node(host, offload_off, index[name])

    def _configure(self, batch: Batch, plan: NodePlan, index: dict[str, int]) -> None:
        batch.link_up(1, "lo up")
        for ifname, addrs in plan.interfaces:
            for a in addrs:
                batch.addr(index[ifname], a, ifname)
            batch.link_up(index[ifname], f"{ifname} up")
        for r in plan.routes:
            where = f" table {r.table}" if r.table is not None else ""
            batch.route(r.dst, index[r.dev], r.gateway, r.table, r.family,
                        f"route {r.dst} via {r.gateway or r.dev}{where}")
        for rule in plan.rules:
            batch.rule(rule.src, rule.table, rule.priority)

    def _shape(self, batch: Batch, idx: int, ifname: str, ln: Link) -> None:
        if ln.delay or ln.jitter:
            kw: dict[str, Any] = {"delay": int((ln.delay or 0) * 1e6)}
            if ln.jitter:
                kw["jitter"] = int(ln.jitter * 1e6)
            if ln.rate:
                kw["rate"] = ln.rate // 8
            batch.qdisc(idx, "netem", kw, f"netem on {ifname}")
        elif ln.rate:
            burst = max(TBF_MIN_BURST, ln.rate // 8 // 250)  # 4 ms worth of bytes
            batch.qdisc(idx, "tbf", {"rate": f"{ln.rate}bit", "burst": burst,
                                     "latency": TBF_LATENCY}, f"tbf on {ifname}")

    def _finish_node(self, host: LabHost, offload_off: bool, index: dict[str, int]) -> None:
        node, topo = host.node, self.topology
        sysctls = {f"net/mptcp/{k}": v for k, v in node.mptcp.items()}
        sysctls.update({k.replace(".", "/"): v for k, v in node.sysctls.items()})
        ifnames = [ln.side(node.name)[0] for ln in topo.links_of(node.name)]
        want_pm = node.limits is not None or bool(node.endpoints)
        if sysctls or offload_off or want_pm:
            def body() -> socket.socket | None:
                for rel, value in sysctls.items():
                    try:
                        _write_sysctls({rel: value})
                    except OSError as exc:
                        raise LabError(f"{node.name}: sysctl {rel.replace('/', '.')}={value}: "
                                       f"{exc.strerror}") from None
                if offload_off:
                    from pyroute2.ethtool.ioctl import IoctlEthtool

                    for ifname in ifnames:
                        eth = IoctlEthtool(ifname)
                        try:
                            eth.set_offload_flag("tx-checksumming", 0)
                        finally:
                            eth.close()
                return rtnl.open_socket(rtnl.NETLINK_GENERIC) if want_pm else None

            genl = ns.run(host.fd, body)
            if genl is not None:
                self._socks.append(genl)
                self._mptcp(host, genl, index)
        loss = {}
        for ln in topo.links_of(node.name):
            if ln.loss:
                loss[ln.side(node.name)[0]] = ln.loss
        ruleset = middlebox.render(node, loss)
        if ruleset:
            host.nft(ruleset)

    def _mptcp(self, host: LabHost, sock: socket.socket, index: dict[str, int]) -> None:
        node = host.node
        batch = Batch(sock, node.name)
        if node.limits is not None:
            attrs = pm_netlink.limits_attrs(node.limits.subflows, node.limits.add_addr_accepted)
            batch.genl(pm_netlink.MPTCP_PM_NAME, pm_netlink.mptcp_pm_msg,
                       pm_netlink.MPTCP_PM_CMD_SET_LIMITS, attrs, "MPTCP limits")
        for ep in node.endpoints:
            attrs = pm_netlink.address_attrs(
                addr=str(ep.addr), id=ep.id, port=ep.port, flags=ep.flags,
                ifindex=index[ep.dev] if ep.dev is not None else None)
            batch.genl(pm_netlink.MPTCP_PM_NAME, pm_netlink.mptcp_pm_msg,
                       pm_netlink.MPTCP_PM_CMD_ADD_ADDR, [("MPTCP_PM_ATTR_ADDR", attrs)],
                       f"MPTCP endpoint {ep.addr} {' '.join(ep.flags)}".rstrip())
        batch.commit()

    # -- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove everything the lab created (idempotent, safe after a partial build). Every
        step runs even if an earlier one failed; the first failure is raised at the end."""
        if not self._started:
            return
        errors: list[Exception] = []

        def attempt(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # keep tearing down; reported below
                errors.append(exc)

        try:
            with self._step():
                for h in self.hosts.values():
                    attempt(h._stop_processes)
                attempt(self._release)
                names = list(dict.fromkeys(self._created + self._planned))
                # Whatever runs inside (a daemon a command left, another program's tcpdump
                # or shell in a lab node) would keep the namespace and its veths alive after
                # the unmount, out of `clean`'s sight: stop it, whoever started it.
                attempt(lifecycle.remove_namespaces, names)
                for n in names:
                    attempt(ns.remove, n)
                if self._state is not None:
                    attempt(self._state.delete)
                self._created.clear()
                self._started = False
                _running.discard(self)
        finally:
            self._release_termination()
        if errors:
            raise LabError(f"tearing down {self.topology.name} ({self.id}): {errors[0]}")

    def _release_termination(self) -> None:
        if self._holding:
            self._holding = False
            lifecycle.release_termination()

    def _release(self) -> None:
        for h in self.hosts.values():
            h._close()
        for sock in self._socks:
            sock.close()
        self._socks.clear()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def detach(self) -> str:
        """Leave the lab running after this process exits (`mptcplab topo up`); returns its
        id for `mptcplab topo down ID`. Background processes are not detached: they stop."""
        if not self._started:
            raise LabError("the lab is not running")
        try:
            with self._step():
                for h in self.hosts.values():
                    h._stop_processes()
                self._release()
                assert self._state is not None
                self._state.detached = True
                self._state.save()
                self._started = False
                _running.discard(self)
        finally:
            self._release_termination()
        return self.id


@atexit.register
def _stop_all() -> None:
    """Labs started without `with` and never stopped: remove them at interpreter exit."""
    for lab in list(_running):
        with contextlib.suppress(Exception):
            lab.stop()

