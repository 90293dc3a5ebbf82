"""`mptcplab nc --policy`: one path-manager policy (mptcplab.pm) steering nc's own connection.

The policy runs in the path-manager daemon (mptcplab.pm.daemon) on a thread of nc, in nc's
namespace, started before the connection is opened: the daemon switches the namespace to the
userspace path manager (a connection gets its path manager when it is created) and puts the old
one back when nc ends. The policy sees only nc's connection: its hooks are called for it alone
and `self.connections` lists nothing else, so other connections of the namespace are left
alone (they get no path manager at all while nc runs: say so to the user, the CLI help does).
nc's connection is known by its local port, which nc fixes before connecting.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from typing import Any

from mptcplab.errors import BadInput, ExitStatus

CONN_HOOKS = ("on_created", "on_established", "on_closed", "on_announced", "on_removed",
              "on_sub_established", "on_sub_closed", "on_sub_priority")


def scope(policy: Any, keep: Callable[[Any], bool]) -> Any:
    """Make `policy` see only the connections `keep` accepts (its class is swapped for a
    subclass whose connection hooks and `connections` filter; nothing else changes)."""
    base = type(policy)
    body: dict[str, Any] = {
        "connections": property(lambda self: {t: c for t, c in
                                              self.daemon.connections.items() if keep(c)}),
    }
    for hook in CONN_HOOKS:
        def forward(self: Any, conn: Any, *args: Any, _hook: str = hook) -> Any:
            if keep(conn):
                return getattr(base, _hook)(self, conn, *args)
            return None
        body[hook] = forward
    policy.__class__ = type(f"{base.__name__}ForOneConnection", (base,), body)
    return policy


class OwnPolicy:
    """A policy for nc's connection: `start()` before connecting, `claim(port)` as soon as
    the local port is known (before the connection's first event can matter), `stop()`."""

    def __init__(self, spec: str, netns: str | None, emit: Callable[[dict[str, Any]], None]
                 ) -> None:
        from mptcplab.pm.policy import make_policy

        words = shlex.split(spec)
        if not words:
            raise BadInput("--policy needs a policy name (and its arguments)",
                           ExitStatus.USAGE)
        self.port: int | None = None
        self.policy = scope(make_policy(words[0], words[1:]), self._mine)
        self.netns = netns
        self.emit = emit
        self.daemon: Any = None
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self._held: list[dict[str, Any]] | None = None

    def _mine(self, conn: Any) -> bool:
        return self.port is not None and conn.sport == self.port

    def claim(self, local_port: int) -> None:
        self.port = local_port

    def start(self) -> None:
        from mptcplab import privileges
        from mptcplab.pm.daemon import Daemon

        privileges.require("--policy (a userspace path manager)", privileges.CAP_NET_ADMIN)
        self._held: list[dict[str, Any]] | None = []   # shown once start() succeeded
        self.daemon = Daemon(self.policy, self.netns, on_record=self._record)
        self.daemon.start()
        held, self._held = self._held, None
        for rec in held or []:
            self.emit(rec)

        def serve() -> None:
            try:
                self.daemon.serve()
            except BaseException as exc:  # re-raised by stop()
                self.failure = exc

        self.thread = threading.Thread(target=serve, name="mptcplab-nc-policy", daemon=True)
        self.thread.start()

    def _record(self, rec: dict[str, Any]) -> None:
        if rec.get("type") in ("decision", "warning") or rec.get("action") == "start":
            if self._held is not None:
                self._held.append(rec)
            else:
                self.emit(rec)

    def stop(self) -> None:
        if self.daemon is None:
            return
        self.daemon.request_stop()
        if self.thread is not None:
            self.thread.join(10)
        self.daemon.stop()
        self.daemon = None
        if self.failure is not None:
            raise self.failure
