"""backup-preference PRIMARY BACKUP: the phone's policy (WiFi preferred, cellular kept as a
silent backup), as the netcat-mptcp report asked for.

Every connection streams over the PRIMARY interface and keeps one subflow over BACKUP marked
backup (MP_JOIN with B set: neither end sends data on it while a non-backup subflow works).
When PRIMARY loses its carrier, goes down or loses its address, the backup subflow becomes a
normal one (MP_PRIO) and PRIMARY's subflows are marked backup, so data moves at once instead of
waiting for retransmission timeouts. When PRIMARY comes back, a fresh subflow is opened over it
if the old one died, and BACKUP's subflow is marked backup again: data moves back, the backup
subflow stays open and idle.
"""

from __future__ import annotations

from mptcplab.errors import BadInput
from mptcplab.pm.events import Event
from mptcplab.pm.links import Link, LocalAddress
from mptcplab.pm.policy import Connection, Policy, Subflow

RETRY = 0.5        # seconds before reopening a subflow that closed


class BackupPreference(Policy):
    """Data over PRIMARY, a backup subflow over BACKUP; switch when PRIMARY fails, and back."""

    name = "backup-preference"

    def __init__(self, primary: str, backup: str) -> None:
        if primary == backup:
            raise ValueError("PRIMARY and BACKUP must be two different interfaces")
        self.primary, self.backup = primary, backup

    def describe(self) -> str:
        return f"data over {self.primary}, a backup subflow over {self.backup}"

    def on_start(self) -> None:
        for name in (self.primary, self.backup):
            if self.link(name) is None:
                raise BadInput(f"backup-preference: no interface {name!r} in this namespace")

    # -- where things are --------------------------------------------------------------------

    def iface_of(self, addr: str) -> str | None:
        for a in self.daemon.links.addresses.values():
            if a.addr == addr:
                return a.ifname
        return None

    def up(self, name: str) -> bool:
        link = self.link(name)
        return link is not None and link.usable

    def on(self, conn: Connection, name: str) -> list[Subflow]:
        return [s for s in conn.subflows.values() if self.iface_of(s.saddr) == name]

    def mine(self, conn: Connection) -> bool:
        return not conn.server_side and not conn.data.get("kernel_pm") and conn.established

    # -- keeping one subflow on each interface, with the right flag -----------------------------

    def ensure(self, conn: Connection, why: str) -> None:
        primary_up = self.up(self.primary)
        for name, want_backup in ((self.primary, False), (self.backup, primary_up)):
            if not self.up(name):
                continue
            subs = self.on(conn, name)
            local = self.address_of(name, conn.family)
            if not subs and local is not None and not conn.opening(local):
                role = "backup" if want_backup else "data"
                self.subflow_create(conn, local, backup=want_backup,
                                    reason=f"{why}: a {role} subflow over {name}")
            for sub in subs:
                if sub.backup != want_backup:
                    self.set_backup(conn, sub, want_backup,
                                    reason=f"{why}: {name} carries "
                                           f"{'nothing unless ' + self.primary + ' fails' if want_backup else 'the data'}")
        if not primary_up:
            for sub in self.on(conn, self.primary):
                if not sub.backup:
                    self.set_backup(conn, sub, True, reason=f"{why}: {self.primary} is down")

    def on_established(self, conn: Connection, event: Event | None) -> None:
        if conn.server_side:
            self.log("skip", "server side: the client chooses its interfaces", conn)
            return
        if self.mine(conn):
            self.ensure(conn, "new connection" if event else "learned at start")

    def on_sub_established(self, conn: Connection, sub: Subflow, event: Event | None) -> None:
        if self.mine(conn):
            self.ensure(conn, f"subflow over {self.iface_of(sub.saddr)} up")

    def on_sub_closed(self, conn: Connection, sub: Subflow, event: Event | None) -> None:
        name = self.iface_of(sub.saddr)
        if self.mine(conn) and conn.token in self.connections and name in (self.primary,
                                                                           self.backup):
            token = conn.token
            self.after(RETRY, self._reopen, token, f"subflow over {name} closed")

    def _reopen(self, token: int, why: str) -> None:
        conn = self.connections.get(token)
        if conn is not None and self.mine(conn):
            self.ensure(conn, why)

    def _all(self, why: str) -> None:
        for conn in list(self.connections.values()):
            if self.mine(conn):
                self.ensure(conn, why)

    def on_link_down(self, link: Link) -> None:
        if link.name in (self.primary, self.backup):
            self._all(f"{link.name} went down")

    def on_link_up(self, link: Link) -> None:
        if link.name in (self.primary, self.backup):
            self._all(f"{link.name} is back")

    def on_address_removed(self, addr: LocalAddress) -> None:
        if addr.ifname in (self.primary, self.backup):
            self._all(f"{addr.addr} left {addr.ifname}")

    def on_address_added(self, addr: LocalAddress) -> None:
        if addr.ifname in (self.primary, self.backup):
            self._all(f"{addr.addr} appeared on {addr.ifname}")
