"""Declared topologies: hosts, routers, links, shaping, sysctls, MPTCP endpoints, middleboxes.

Pure data and checks, no root and no I/O (except listing which MPTCP sysctls this kernel has).
`Topology.check()` finds every bad declaration before the lab creates anything, and
`Topology.plan()` works out the addresses, routes and per-source rules each node gets.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mptcplab.errors import BadInput
from mptcplab.topo.naming import IFNAME_RE, IFNAMSIZ, NODE_NAME_RE

if TYPE_CHECKING:
    from mptcplab.topo.middlebox import Middlebox

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

MPTCP_SYSCTL_DIR = "/proc/sys/net/mptcp"
ENDPOINT_FLAGS = ("signal", "subflow", "backup", "fullmesh", "laminar")
POLICY_TABLE_BASE = 100      # table 101, 102, ... : one per link of a multihomed host
POLICY_PREF_BASE = 1000      # rule priorities, well before main (32766)

TBF_MAX_BYTES_PER_S = 2**32 - 1   # tc_tbf_qopt's rate is a u32 of bytes per second
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_rate(value: str | float | None) -> int | None:
    """'100mbit' -> 100_000_000 bit/s (tc's units: mbit is bits, mbps is bytes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadInput(f"bad rate {value!r}: use e.g. '100mbit', '500kbit', '1gbit'")
    if isinstance(value, (int, float)):
        rate = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _RATE_UNITS:
            raise BadInput(f"bad rate {value!r}: use e.g. '100mbit', '500kbit', '1gbit'")
        rate = int(float(m.group(1)) * _RATE_UNITS[unit])
    if rate < 8:
        raise BadInput(f"bad rate {value!r}: must be at least 8bit (one byte a second)")
    if rate // 8 > TBF_MAX_BYTES_PER_S:
        raise BadInput(f"rate {value!r} is more than tbf can shape here "
                       f"({TBF_MAX_BYTES_PER_S * 8 / 1e9:.1f} Gbit/s, 2^32-1 bytes/s); leave "
                       "rate unset for an unshaped link")
    return rate


def parse_time(value: str | float | None, what: str) -> float | None:
    """'20ms' -> 0.02 s; bare numbers are milliseconds (tc's habit)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value) / 1000
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|ms|us)?\s*", str(value))
        if not m:
            raise BadInput(f"bad {what} {value!r}: use e.g. '20ms'")
        secs = float(m.group(1)) * _TIME_UNITS[m.group(2) or "ms"]
    if secs < 0:
        raise BadInput(f"bad {what} {value!r}: must not be negative")
    return secs


def mptcp_sysctl_names() -> list[str]:
    """The MPTCP sysctls this kernel has (probe, not version check)."""
    try:
        return sorted(os.listdir(MPTCP_SYSCTL_DIR))
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Endpoint:
    """An MPTCP endpoint (`ip mptcp endpoint add ADDR [id ID] [port P] [dev IF] FLAGS`)."""

    addr: IPAddr
    flags: tuple[str, ...]
    id: int | None = None
    port: int | None = None
    dev: str | None = None


@dataclass(frozen=True)
class Limits:
    """MPTCP path-manager limits (`ip mptcp limits set subflows N add_addr_accepted M`)."""

    subflows: int | None = None
    add_addr_accepted: int | None = None


@dataclass
class Node:
    """A host or router: one network namespace."""

    name: str
    kind: str                                          # "host" or "router"
    sysctls: dict[str, str] = field(default_factory=dict)
    mptcp: dict[str, str] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    limits: Limits | None = None
    middleboxes: list[Middlebox] = field(default_factory=list)
    policy_routing: bool = True
    _topology: Topology | None = field(default=None, repr=False, compare=False)

    @property
    def is_router(self) -> bool:
        return self.kind == "router"

    def endpoint(self, addr: str, *flags: str, id: int | None = None, port: int | None = None,
                 dev: str | None = None) -> Node:
        """Declare an MPTCP endpoint; flags among signal, subflow, backup, fullmesh, laminar."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise BadInput(f"{self.name}: bad endpoint address {addr!r}") from None
        for f in flags:
            if f not in ENDPOINT_FLAGS:
                raise BadInput(f"{self.name}: unknown endpoint flag {f!r} "
                               f"(one of {', '.join(ENDPOINT_FLAGS)})")
        if id is not None and not 1 <= id <= 255:
            raise BadInput(f"{self.name}: endpoint id {id} out of range 1-255")
        if port is not None and not 1 <= port <= 65535:
            raise BadInput(f"{self.name}: endpoint port {port} out of range 1-65535")
        self.endpoints.append(Endpoint(ip, tuple(flags), id, port, dev))
        return self

    def set_limits(self, subflows: int | None = None, add_addr_accepted: int | None = None) -> Node:
        for what, v in (("subflows", subflows), ("add_addr_accepted", add_addr_accepted)):
            if v is not None and not 0 <= v <= 8:
                raise BadInput(f"{self.name}: {what} limit {v} out of range 0-8")
        self.limits = Limits(subflows, add_addr_accepted)
        return self

    def middlebox(self, *boxes: Middlebox) -> Node:
        """Put middleboxes on this node (forward path on a router, input path on a host)."""
        from mptcplab.topo.middlebox import Middlebox   # it imports this module

        for box in boxes:
            if not isinstance(box, Middlebox):
                raise BadInput(f"{self.name}: {box!r} is not a middlebox")
        self.middleboxes.extend(boxes)
        return self


@dataclass
class Link:
    """A veth pair between two nodes, with optional addresses and shaping."""

    a: str
    b: str
    a_if: str
    b_if: str
    v4: ipaddress.IPv4Network | None = None
    v6: ipaddress.IPv6Network | None = None
    a_addrs: tuple[IPIface, ...] = ()
    b_addrs: tuple[IPIface, ...] = ()
    rate: int | None = None        # bit/s, both directions (tbf)
    loss: float = 0.0              # percent, both directions (nft numgen random)
    delay: float | None = None     # seconds, needs netem
    jitter: float | None = None
    mtu: int | None = None
    label: str = ""

    def side(self, node: str) -> tuple[str, tuple[IPIface, ...], str, tuple[IPIface, ...], str]:
        """(local ifname, local addrs, peer node, peer addrs, peer ifname) seen from `node`."""
        if node == self.a:
            return self.a_if, self.a_addrs, self.b, self.b_addrs, self.b_if
        return self.b_if, self.b_addrs, self.a, self.a_addrs, self.a_if


@dataclass(frozen=True)
class Route:
    dst: str                  # "default" or a network
    dev: str
    gateway: str | None = None
    table: int | None = None  # None: main
    family: int = 4


@dataclass(frozen=True)
class Rule:
    src: str
    table: int
    priority: int
    family: int = 4


@dataclass
class NodePlan:
    """What the builder does in one namespace, worked out from the declaration."""

    node: Node
    interfaces: list[tuple[str, tuple[IPIface, ...]]] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)


class Topology:
    """A declared lab: build one with host()/router()/link(), run it with `Lab(topology)`."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name = name
        self.doc = doc
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []

    # -- declaration -------------------------------------------------------------------------

    def host(self, name: str, *, sysctls: Mapping[str, object] | None = None,
             mptcp: Mapping[str, object] | None = None, limits: Limits | None = None,
             policy_routing: bool = True) -> Node:
        """A host (does not forward). `mptcp=` sets net.mptcp.* sysctls in its namespace."""
        return self._add(name, "host", sysctls, mptcp, limits, policy_routing)

    def router(self, name: str, *, sysctls: Mapping[str, object] | None = None,
               mptcp: Mapping[str, object] | None = None) -> Node:
        """A router: forwards IPv4 and IPv6 between its links."""
        return self._add(name, "router", sysctls, mptcp, None, False)

    def _add(self, name: str, kind: str, sysctls: Mapping[str, object] | None,
             mptcp: Mapping[str, object] | None, limits: Limits | None,
             policy_routing: bool) -> Node:
        if not NODE_NAME_RE.match(name):
            raise BadInput(f"bad node name {name!r}: lowercase letters, digits and _, "
                           "starting with a letter, at most 24 characters")
        if name in self.nodes:
            raise BadInput(f"duplicate node {name!r}")
        node = Node(name, kind, {k: str(v) for k, v in (sysctls or {}).items()},
                    {k: str(v) for k, v in (mptcp or {}).items()}, [], limits, [],
                    policy_routing, self)
        self.nodes[name] = node
        return node

    def node(self, ref: str | Node) -> Node:
        name = ref.name if isinstance(ref, Node) else ref
        try:
            return self.nodes[name]
        except KeyError:
            raise BadInput(f"unknown host {name!r} (declared: {', '.join(self.nodes) or 'none'})"
                           ) from None

    def link(self, a: str | Node, b: str | Node, *, v4: str | None = None,
             v6: str | None = None, ifnames: tuple[str, str] | None = None,
             addrs: Mapping[str, str | Iterable[str]] | None = None,
             rate: str | int | None = None, loss: float = 0.0,
             delay: str | float | None = None, jitter: str | float | None = None,
             mtu: int | None = None, label: str = "") -> Link:
        """Connect two nodes with a veth pair.

        v4/v6 are subnets: the first node gets the first address, the second the next one,
        unless `addrs={"node": "10.0.1.254"}` says otherwise. Shaping applies both ways:
        rate ('100mbit'), loss (percent), delay/jitter ('20ms', needs netem).
        """
        na, nb = self.node(a), self.node(b)
        if na.name == nb.name:
            raise BadInput(f"link from {na.name!r} to itself")
        a_if, b_if = ifnames if ifnames else (self._next_ifname(na.name),
                                              self._next_ifname(nb.name))
        link = Link(na.name, nb.name, a_if, b_if, rate=parse_rate(rate),
                    delay=parse_time(delay, "delay"), jitter=parse_time(jitter, "jitter"),
                    mtu=mtu, label=label)
        if not isinstance(loss, (int, float)) or not 0 <= loss < 100:
            raise BadInput(f"link {na.name}-{nb.name}: loss {loss!r} must be a percentage in "
                           "[0, 100)")
        link.loss = float(loss)
        explicit = {self.node(k).name: [v] if isinstance(v, str) else list(v)
                    for k, v in (addrs or {}).items()}
        for k in explicit:
            if k not in (na.name, nb.name):
                raise BadInput(f"link {na.name}-{nb.name}: addrs given for {k!r}, not an end")
        a_addrs: list[IPIface] = []
        b_addrs: list[IPIface] = []
        for fam, subnet in ((4, v4), (6, v6)):
            if subnet is None:
                continue
            try:
                net = ipaddress.ip_network(subnet, strict=True)
            except ValueError as exc:
                raise BadInput(f"link {na.name}-{nb.name}: bad subnet {subnet!r}: {exc}") from None
            if net.version != fam:
                raise BadInput(f"link {na.name}-{nb.name}: v{fam}= given {subnet!r}")
            if fam == 4:
                link.v4 = net  # type: ignore[assignment]
            else:
                link.v6 = net  # type: ignore[assignment]
            hosts = iter(net.hosts()) if net.num_addresses > 2 else iter(net)
            for name, out in ((na.name, a_addrs), (nb.name, b_addrs)):
                chosen = []
                for x in explicit.get(name, []):
                    try:
                        if ipaddress.ip_address(x.split("/")[0]).version != fam:
                            continue
                        iface = ipaddress.ip_interface(x if "/" in x else f"{x}/{net.prefixlen}")
                    except ValueError:
                        raise BadInput(f"link {na.name}-{nb.name}: bad address {x!r}") from None
                    if iface.network != net:
                        raise BadInput(f"link {na.name}-{nb.name}: {x} is not in {net}")
                    chosen.append(iface)
                if chosen:
                    out.extend(chosen)
                else:
                    try:
                        out.append(ipaddress.ip_interface(f"{next(hosts)}/{net.prefixlen}"))
                    except StopIteration:
                        raise BadInput(f"link {na.name}-{nb.name}: subnet {net} too small"
                                       ) from None
        link.a_addrs, link.b_addrs = tuple(a_addrs), tuple(b_addrs)
        self.links.append(link)
        return link

    def middlebox(self, node: str | Node, *boxes: Middlebox) -> None:
        self.node(node).middlebox(*boxes)

    def _next_ifname(self, node: str) -> str:
        used = {ln.side(node)[0] for ln in self.links if node in (ln.a, ln.b)}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"

    # -- queries -----------------------------------------------------------------------------

    def links_of(self, node: str) -> list[Link]:
        return [ln for ln in self.links if node in (ln.a, ln.b)]

    def addresses(self, node: str) -> list[IPIface]:
        return [a for ln in self.links_of(node) for a in ln.side(node)[1]]

    def addr(self, node: str, ifname: str | None = None, family: int = 4) -> str:
        """First address (no prefix) of `node` [on `ifname`] in `family`."""
        for ln in self.links_of(node):
            local_if, local, *_ = ln.side(node)
            if ifname is None or ifname == local_if:
                for a in local:
                    if a.version == family:
                        return str(a.ip)
        where = f" on {ifname}" if ifname else ""
        raise BadInput(f"{node} has no IPv{family} address{where}")

    def uses_nft(self) -> bool:
        return any(ln.loss for ln in self.links) or any(n.middleboxes for n in self.nodes.values())

    def uses_netem(self) -> bool:
        return any(ln.delay or ln.jitter for ln in self.links)

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise BadInput for the first bad declaration; creates nothing."""
        if not self.nodes:
            raise BadInput(f"topology {self.name!r} declares no node")
        seen_addr: dict[IPAddr, str] = {}
        known_mptcp = mptcp_sysctl_names()
        for node in self.nodes.values():
            ifnames: set[str] = set()
            for ln in self.links_of(node.name):
                ifname = ln.side(node.name)[0]
                if len(ifname) > IFNAMSIZ:
                    raise BadInput(f"interface name {ifname!r} on {node.name} is {len(ifname)} "
                                   f"characters (Linux allows {IFNAMSIZ})")
                if not IFNAME_RE.match(ifname) or ifname in (".", "..", "lo"):
                    raise BadInput(f"bad interface name {ifname!r} on {node.name}")
                if ifname in ifnames:
                    raise BadInput(f"duplicate interface {ifname!r} on {node.name}")
                ifnames.add(ifname)
                for a in ln.side(node.name)[1]:
                    where = f"{node.name} {ifname}"
                    if a.ip in seen_addr:
                        raise BadInput(f"duplicate address {a.ip} ({seen_addr[a.ip]} and {where})")
                    seen_addr[a.ip] = where
            for key in node.mptcp:
                if known_mptcp and key not in known_mptcp:
                    raise BadInput(f"{node.name}: unknown MPTCP sysctl {key!r} "
                                   f"(this kernel has: {', '.join(known_mptcp)})")
            for key in node.sysctls:
                if not re.fullmatch(r"net\.[A-Za-z0-9_.\-]+", key) or ".." in key:
                    raise BadInput(f"{node.name}: sysctl {key!r} is not a net.* sysctl "
                                   "(only namespaced net.* sysctls can be set in a lab)")
            own = {a.ip for a in self.addresses(node.name)}
            ids: set[int] = set()
            for ep in node.endpoints:
                if ep.addr not in own:
                    raise BadInput(f"{node.name}: endpoint {ep.addr} is not an address of "
                                   f"{node.name}")
                if ep.dev is not None and ep.dev not in ifnames:
                    raise BadInput(f"{node.name}: endpoint device {ep.dev!r} is not an "
                                   f"interface of {node.name}")
                if ep.id is not None:
                    if ep.id in ids:
                        raise BadInput(f"{node.name}: duplicate endpoint id {ep.id}")
                    ids.add(ep.id)
            for mb in node.middleboxes:
                mb.check(node, ifnames)
        for ln in self.links:
            if ln.mtu is not None and (not isinstance(ln.mtu, int) or isinstance(ln.mtu, bool)
                                       or not 68 <= ln.mtu <= 65535):
                raise BadInput(f"link {ln.a}-{ln.b}: mtu {ln.mtu!r} is not a whole number "
                               "from 68 to 65535")
            if ln.mtu is not None and ln.mtu < 1280 and ln.v6 is not None:
                raise BadInput(f"link {ln.a}-{ln.b}: mtu {ln.mtu} is below the 1280 bytes IPv6 "
                               "needs (RFC 8200), and this link has IPv6 addresses: use an MTU "
                               "of 1280 or more")

    # -- plan --------------------------------------------------------------------------------

    def plan(self) -> dict[str, NodePlan]:
        """Addresses, routes and source rules per node (pure: unit-testable without root)."""
        plans = {n: NodePlan(node) for n, node in self.nodes.items()}
        for n, p in plans.items():
            for ln in self.links_of(n):
                ifname, addrs, *_ = ln.side(n)
                p.interfaces.append((ifname, addrs))
        for fam in (4, 6):
            attached = self._attached(fam)
            for n, p in plans.items():
                self._plan_routes(p, fam, attached)
        return plans

    def _attached(self, fam: int) -> dict[IPNet, set[str]]:
        out: dict[IPNet, set[str]] = {}
        for ln in self.links:
            net = ln.v4 if fam == 4 else ln.v6
            if net is not None:
                out.setdefault(net, set()).update((ln.a, ln.b))
        return out

    def _gw(self, ln: Link, node: str, fam: int) -> str | None:
        _, _, _, peer_addrs, _ = ln.side(node)
        return next((str(a.ip) for a in peer_addrs if a.version == fam), None)

    def _first_hop(self, start: str, net: IPNet, fam: int,
                   attached: dict[IPNet, set[str]]) -> Link | None:
        """First link on a shortest path from `start` to `net`, transiting only routers."""
        queue: deque[tuple[str, Link]] = deque()
        seen = {start}
        for ln in self.links_of(start):
            if self._gw(ln, start, fam):
                queue.append((ln.side(start)[2], ln))
        while queue:
            node, first = queue.popleft()
            if node in seen:
                continue
            seen.add(node)
            if node in attached[net]:
                return first
            if not self.nodes[node].is_router:
                continue
            for ln in self.links_of(node):
                nxt = ln.side(node)[2]
                if nxt not in seen and self._gw(ln, node, fam):
                    queue.append((nxt, first))
        return None

    def _plan_routes(self, p: NodePlan, fam: int, attached: dict[IPNet, set[str]]) -> None:
        n = p.node.name
        mine = [ln for ln in self.links_of(n) if self._gw(ln, n, fam)]
        direct = {ln.v4 if fam == 4 else ln.v6 for ln in mine}
        default_link = None
        if not p.node.is_router:
            default_link = next((ln for ln in mine if self.nodes[ln.side(n)[2]].is_router), None)
            if default_link is not None:
                p.routes.append(Route("default", default_link.side(n)[0],
                                      self._gw(default_link, n, fam), None, fam))
        for net in attached:
            if net in direct:
                continue
            first = self._first_hop(n, net, fam, attached)
            if first is None or first is default_link:
                continue
            p.routes.append(Route(str(net), first.side(n)[0], self._gw(first, n, fam), None, fam))
        if p.node.is_router or not p.node.policy_routing or len(mine) < 2:
            return
        # Multihomed host: traffic from each address leaves by that address's link.
        for i, ln in enumerate(self.links_of(n), start=1):
            ifname, addrs, peer, _, _ = ln.side(n)
            net = ln.v4 if fam == 4 else ln.v6
            if net is None:
                continue
            table = POLICY_TABLE_BASE + i
            p.routes.append(Route(str(net), ifname, None, table, fam))
            if self.nodes[peer].is_router:
                p.routes.append(Route("default", ifname, self._gw(ln, n, fam), table, fam))
            for a in addrs:
                if a.version == fam:
                    p.rules.append(Rule(str(a.ip), table, POLICY_PREF_BASE + i, fam))

    def describe(self) -> dict[str, object]:
        """A JSON-able summary (for `topo show`)."""
        return {
            "name": self.name,
            "doc": self.doc,
            "nodes": [{"name": n.name, "kind": n.kind,
                       "interfaces": {ln.side(n.name)[0]: [str(a) for a in ln.side(n.name)[1]]
                                      for ln in self.links_of(n.name)},
                       "mptcp": dict(n.mptcp),
                       "endpoints": [{"addr": str(e.addr), "flags": list(e.flags), "id": e.id,
                                      "port": e.port, "dev": e.dev} for e in n.endpoints],
                       "limits": None if n.limits is None else
                       {"subflows": n.limits.subflows,
                        "add_addr_accepted": n.limits.add_addr_accepted},
                       "middleboxes": [str(mb) for mb in n.middleboxes]}
                      for n in self.nodes.values()],
            "links": [{"a": f"{ln.a}:{ln.a_if}", "b": f"{ln.b}:{ln.b_if}", "label": ln.label,
                       "v4": str(ln.v4) if ln.v4 else None, "v6": str(ln.v6) if ln.v6 else None,
                       "rate_bps": ln.rate, "loss_pct": ln.loss, "delay_s": ln.delay}
                      for ln in self.links],
        }
