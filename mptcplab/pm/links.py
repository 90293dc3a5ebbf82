"""Interfaces and addresses of a namespace, kept current from rtnetlink notifications.

The daemon's policies react to a path going away and coming back: an interface losing its
carrier (a WiFi radio dropping its association, a veth whose peer went down) or being set
down, and addresses appearing or disappearing. A link counts as usable when it is up and has
its carrier (IFF_UP and IFF_LOWER_UP).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from mptcplab.pm.netlink import HDR, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_LOWER_UP = 0x10000
IFA_F_TENTATIVE = 0x40
IFA_F_DEPRECATED = 0x20
RT_SCOPE_UNIVERSE = 0


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int

    @property
    def usable(self) -> bool:
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)


@dataclass(frozen=True)
class LocalAddress:
    """An address of the namespace that subflows can use (global scope)."""

    addr: str
    ifindex: int
    ifname: str
    prefixlen: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.addr else socket.AF_INET


class LinkWatch:
    """Links and global addresses of the namespace the socket was opened in. `poll()` reads
    pending notifications and returns what changed, as (kind, object) pairs with kind among
    link_up, link_down, address_added, address_removed."""

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self, sock: socket.socket, dump_sock: socket.socket) -> None:
        """`sock`: subscribed to the groups (before the dump, so that no change is missed:
        the notifications queued meanwhile are replayed by poll()); `dump_sock`: a plain
        rtnetlink socket of the same namespace for the initial dumps (closed here)."""
        self.sock = sock
        self.links: dict[int, Link] = {}
        self.addresses: dict[tuple[str, int], LocalAddress] = {}
        self._seq = 0
        with dump_sock:
            for msg in self._dump(dump_sock, RTM_GETLINK, ifinfmsg):
                self._link(msg, notify=False)
            for msg in self._dump(dump_sock, RTM_GETADDR, ifaddrmsg):
                self._addr(msg, RTM_NEWADDR, notify=False)

    @staticmethod
    def open_here() -> tuple[socket.socket, socket.socket]:
        """The subscribed rtnetlink socket and one for dumps (call in the namespace)."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, LinkWatch.GROUPS))
        dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        dump.bind((0, 0))
        return sock, dump

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def usable_addresses(self, family: int | None = None) -> list[LocalAddress]:
        """Global addresses on usable, non-loopback links (optionally of one family)."""
        out = []
        for a in self.addresses.values():
            link = self.links.get(a.ifindex)
            if link is None or not link.usable or link.loopback:
                continue
            if family is not None and a.family != family:
                continue
            out.append(a)
        return sorted(out, key=lambda a: (a.ifindex, a.addr))

    def link_by_name(self, name: str) -> Link | None:
        return next((ln for ln in self.links.values() if ln.name == name), None)

    # -- netlink ---------------------------------------------------------------------------

    def _dump(self, sock: socket.socket, mtype: int, cls: type) -> list:
        self._seq += 1
        m = cls()
        m["family"] = socket.AF_UNSPEC
        m["header"]["type"] = mtype
        m["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        m["header"]["sequence_number"] = self._seq
        m.encode()
        sock.send(bytes(m.data))
        out = []
        while True:
            data = sock.recv(1 << 20)
            for mt, chunk, seq in self._split(data):
                if seq != self._seq:
                    continue
                if mt in (NLMSG_DONE, NLMSG_ERROR):
                    return out
                msg = cls(chunk)
                msg.decode()
                out.append(msg)

    @staticmethod
    def _split(data: bytes) -> list[tuple[int, bytes, int]]:
        out, off = [], 0
        while off + 16 <= len(data):
            length, mtype, _f, seq, _pid = HDR.unpack_from(data, off)
            if length < 16:
                break
            out.append((mtype, data[off:off + length], seq))
            off += (length + 3) & ~3
        return out

    def poll(self) -> list[tuple[str, object]]:
        """Read one datagram of notifications; what changed."""
        changes: list[tuple[str, object]] = []
        data = self.sock.recv(1 << 20)
        for mtype, chunk, _seq in self._split(data):
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                msg = ifinfmsg(chunk)
                msg.decode()
                changes += self._link(msg, deleted=mtype == RTM_DELLINK)
            elif mtype in (RTM_NEWADDR, RTM_DELADDR):
                msg = ifaddrmsg(chunk)
                msg.decode()
                changes += self._addr(msg, mtype)
        return changes

    def _link(self, msg: ifinfmsg, deleted: bool = False,
              notify: bool = True) -> list[tuple[str, object]]:
        index = msg["index"]
        name = msg.get_attr("IFLA_IFNAME") or str(index)
        old = self.links.get(index)
        if deleted:
            self.links.pop(index, None)
            new = Link(index, name, 0)
        else:
            new = Link(index, name, msg["flags"])
            self.links[index] = new
        if not notify:
            return []
        was = old is not None and old.usable
        if was and not new.usable:
            return [("link_down", new)]
        if not was and new.usable:
            return [("link_up", new)]
        return []

    def _addr(self, msg: ifaddrmsg, mtype: int, notify: bool = True
              ) -> list[tuple[str, object]]:
        if msg["scope"] != RT_SCOPE_UNIVERSE:
            return []
        addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if addr is None:
            return []
        addr = str(ipaddress.ip_address(addr))
        index = msg["index"]
        link = self.links.get(index)
        key = (addr, index)
        if mtype == RTM_DELADDR:
            gone = self.addresses.pop(key, None)
            return [("address_removed", gone)] if gone is not None and notify else []
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if flags & IFA_F_TENTATIVE:
            return []
        new = LocalAddress(addr, index, link.name if link else str(index), msg["prefixlen"])
        known = key in self.addresses
        self.addresses[key] = new
        return [("address_added", new)] if notify and not known else []

