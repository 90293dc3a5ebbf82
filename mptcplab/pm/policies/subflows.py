"""subflows N: the ancestor's `daemon.py --simulate N`. N subflows per connection over the
same address pair, their source ports chosen so that `sport mod N` differ: an ECMP router
hashing on ports modulo N then spreads one connection over all N paths."""

from __future__ import annotations

import errno
import random

from mptcplab.pm.events import Event
from mptcplab.pm.policies.ndiffports import NDiffPorts
from mptcplab.pm.policy import Connection, Subflow

PORT_RANGE = (32768, 60999)      # net.ipv4.ip_local_port_range's default
TRIES = 10                       # a port may be taken by a socket this policy does not know


class Subflows(NDiffPorts):
    """N subflows per connection over its address pair, source ports distinct modulo N."""

    name = "subflows"

    def __init__(self, n: int = 2) -> None:
        super().__init__(n)
        self.rng = random.Random()
        self.taken: set[tuple[str, int]] = set()      # (address, port) given to live subflows

    def pick_port(self, addr: str, residue: int) -> int:
        lo, hi = PORT_RANGE
        first = lo + (residue - lo) % self.n
        for _ in range(64):
            port = first + self.n * self.rng.randrange((hi - first) // self.n + 1)
            if (addr, port) not in self.taken:
                return port
        return port

    def on_established(self, conn: Connection, event: Event | None) -> None:
        if not self.acts_on(conn):
            return
        used = {s.sport % self.n for s in conn.subflows_between(conn.saddr, conn.daddr)}
        for residue in (r for r in range(self.n) if r not in used):
            for attempt in range(TRIES):
                port = self.pick_port(conn.saddr, residue)
                why = (f"sport {port} mod {self.n} = {residue}, which no other subflow of "
                       f"{conn.saddr} -> {conn.daddr} has")
                if attempt:
                    why += f" (try {attempt + 1}: the port before was in use)"
                out = self.subflow_create(conn, conn.saddr, local_port=port, reason=why)
                if out:
                    self.taken.add((conn.saddr, port))
                if out or out.errno != errno.EADDRINUSE:
                    break

    def on_sub_closed(self, conn: Connection, sub: Subflow, event: Event | None) -> None:
        self.taken.discard((sub.saddr, sub.sport))

    def on_closed(self, conn: Connection, event: Event | None) -> None:
        for sub in conn.subflows.values():
            self.taken.discard((sub.saddr, sub.sport))
