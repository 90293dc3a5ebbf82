"""fullmesh: one subflow per pair of (local address, remote address), the remote addresses
being the connection's own and every one the peer announces (ADD_ADDR); kept up as addresses
and links come and go. Pairs are of the connection's own family: the kernel refuses an IPv6
subflow on an IPv4 connection (`families mismatch`)."""

from __future__ import annotations

from mptcplab.pm.events import Event
from mptcplab.pm.links import Link, LocalAddress
from mptcplab.pm.policy import Connection, Policy, family_of


class FullMesh(Policy):
    """One subflow per local address x remote address, including announced ones."""

    name = "fullmesh"

    def mesh(self, conn: Connection, why: str) -> None:
        if conn.server_side or conn.data.get("kernel_pm") or not conn.established:
            return
        for local in self.local_addresses(conn.family):
            for rem_id, (raddr, rport) in sorted(conn.remote_addrs.items()):
                if family_of(raddr) != conn.family:
                    continue
                if conn.subflows_between(local.addr, raddr) or conn.opening(local.addr, raddr):
                    continue
                self.subflow_create(conn, local.addr, raddr, rport,
                                    reason=f"{why}: {local.addr} ({local.ifname}) x {raddr} "
                                           f"(remote id {rem_id})")

    def on_established(self, conn: Connection, event: Event | None) -> None:
        if conn.server_side:
            self.log("skip", "server side: the client opens subflows", conn)
            return
        self.mesh(conn, "established" if event else "learned at start")

    def on_announced(self, conn: Connection, event: Event) -> None:
        self.mesh(conn, f"peer announced {event.daddr}")

    def on_removed(self, conn: Connection, event: Event) -> None:
        for sub in list(conn.subflows.values()):
            if sub.rem_id == event.rem_id and sub.rem_id != 0:
                self.subflow_destroy(conn, sub, reason=f"peer removed address id "
                                                       f"{event.rem_id}")

    def on_address_added(self, addr: LocalAddress) -> None:
        for conn in list(self.connections.values()):
            self.mesh(conn, f"new local address {addr.addr} on {addr.ifname}")

    def on_link_up(self, link: Link) -> None:
        for conn in list(self.connections.values()):
            self.mesh(conn, f"{link.name} is up")

    def on_address_removed(self, addr: LocalAddress) -> None:
        for conn in list(self.connections.values()):
            for sub in conn.subflows_between(saddr=addr.addr):
                if (sub.saddr, sub.sport) != (conn.saddr, conn.sport):
                    self.subflow_destroy(conn, sub, reason=f"{addr.addr} left {addr.ifname}")
