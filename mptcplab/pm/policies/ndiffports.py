"""ndiffports N: N subflows per connection over the same pair of addresses, as the
out-of-tree ndiffports path manager did (several TCP flows through the same path)."""

from __future__ import annotations

from mptcplab.pm.events import Event
from mptcplab.pm.policy import Connection, Policy


class NDiffPorts(Policy):
    """N subflows per connection over its own address pair (the initial one and N-1 more)."""

    name = "ndiffports"

    def __init__(self, n: int = 2) -> None:
        if not 1 <= n <= 9:
            raise ValueError(f"N must be 1-9 (the kernel allows 8 extra subflows), got {n}")
        self.n = n

    def acts_on(self, conn: Connection) -> bool:
        """Only the client side opens subflows, and only on connections this PM owns."""
        if conn.server_side:
            self.log("skip", "server side: the client opens the subflows", conn)
            return False
        if conn.data.get("kernel_pm"):
            self.log("skip", "opened under the in-kernel path manager", conn)
            return False
        return True

    def on_established(self, conn: Connection, event: Event | None) -> None:
        if not self.acts_on(conn):
            return
        have = len(conn.subflows_between(conn.saddr, conn.daddr)) + \
            conn.opening(conn.saddr, conn.daddr)
        for total in range(have + 1, self.n + 1):
            self.subflow_create(conn, conn.saddr, reason=f"subflow {total} of {self.n} over "
                                                         f"{conn.saddr} -> {conn.daddr}")
