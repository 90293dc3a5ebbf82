"""The old out-of-tree "enhanced socket API" (multipath-tcp.org kernels, v0.9x), rebuilt on
upstream Linux: what an application could ask of its own MPTCP socket, with today's mechanism
underneath each call.

    s = MptcpSocket(sock)                  # a connected IPPROTO_MPTCP socket
    s.get_sub_ids()                        # MPTCP_GET_SUB_IDS   -> MPTCP_FULL_INFO + sock_diag
    s.get_sub_tuple(2)                     # MPTCP_GET_SUB_TUPLE -> MPTCP_FULL_INFO
    s.open_sub_tuple("10.0.2.1", "10.0.2.2")   # MPTCP_OPEN_SUB_TUPLE -> PM SUBFLOW_CREATE
    s.close_sub_id(2)                      # MPTCP_CLOSE_SUB_ID  -> PM SUBFLOW_DESTROY
    s.sub_getsockopt(2, SOL_TCP, TCP_INFO) # MPTCP_SUB_GETSOCKOPT -> MPTCP_FULL_INFO tcp_info
    s.set_backup(2)                        # the low_prio bit     -> PM SET_FLAGS (MP_PRIO)
    s.sub_setsockopt(2, ...)               # MPTCP_SUB_SETSOCKOPT: only what upstream allows

Upstream moved subflow control out of the socket into the path manager (the `mptcp_pm`
generic netlink family): opening, closing and re-prioritising one subflow needs the userspace
path manager in the connection's namespace (net.mptcp.pm_type = 1 when the connection is
made); the in-kernel one is steered by endpoints for all connections at once, and this class
says so instead of pretending. Subflow ids are the kernel's own (`subflow_id`: 1 for the
initial subflow, counting up, never reused), the same ids MPTCP_FULL_INFO reports.
docs/socket-api.md maps every old call to its upstream equivalent with an example each.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from mptcplab import sockdiag, sockopt
from mptcplab.describe import endpoint
from mptcplab.errors import BadInput, ExitStatus, LabError
from mptcplab.poll import until
from mptcplab.sockopt import SockAddr, Subflow, TcpInfo

# Options the kernel applies to every subflow when set on the MPTCP socket (net/mptcp/
# sockopt.c: the msk copies them to each subflow, present and future). Nothing can be set on
# one subflow alone.
PROPAGATED: dict[tuple[int, int], str] = {
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): "SO_KEEPALIVE",
    (socket.SOL_SOCKET, socket.SO_PRIORITY): "SO_PRIORITY",
    (socket.SOL_SOCKET, socket.SO_SNDBUF): "SO_SNDBUF",
    (socket.SOL_SOCKET, socket.SO_RCVBUF): "SO_RCVBUF",
    (socket.SOL_SOCKET, socket.SO_MARK): "SO_MARK",
    (socket.SOL_SOCKET, socket.SO_LINGER): "SO_LINGER",
    (socket.SOL_SOCKET, socket.SO_BINDTODEVICE): "SO_BINDTODEVICE",
    (socket.IPPROTO_IP, socket.IP_TOS): "IP_TOS",
    (socket.IPPROTO_IPV6, socket.IPV6_TCLASS): "IPV6_TCLASS",
    (socket.IPPROTO_TCP, socket.TCP_NODELAY): "TCP_NODELAY",
    (socket.IPPROTO_TCP, socket.TCP_CORK): "TCP_CORK",
    (socket.IPPROTO_TCP, socket.TCP_CONGESTION): "TCP_CONGESTION",
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): "TCP_KEEPIDLE",
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): "TCP_KEEPINTVL",
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): "TCP_KEEPCNT",
    (socket.IPPROTO_TCP, socket.TCP_MAXSEG): "TCP_MAXSEG",
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT): "TCP_USER_TIMEOUT",
    (socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT): "TCP_NOTSENT_LOWAT",
}


def _option_name(level: int, optname: int) -> str:
    if (level, optname) in PROPAGATED:
        return PROPAGATED[(level, optname)]
    if (level, optname) == (socket.IPPROTO_TCP, socket.TCP_INFO):
        return "TCP_INFO"
    return f"option {optname} at level {level}"


class NotPerSubflow(LabError):
    """Upstream Linux has no way to do this on one subflow."""

    status = ExitStatus.MISSING_TOOL


class InKernelPathManager(LabError):
    """The connection is steered by the in-kernel path manager: no per-connection commands."""


@dataclass(frozen=True)
class SubStatus:
    """What MPTCP_GET_SUB_IDS said of a subflow (struct mptcp_sub_status: id, the
    fully_established bit, low_prio), with the upstream state beside it."""

    id: int
    state: str                  # the subflow's TCP state (tcp_info.tcpi_state)
    fully_established: bool     # the peer acknowledged its MP_CAPABLE/MP_JOIN third ACK
    backup_local: bool          # we asked the peer to use it as backup (low_prio)
    backup_remote: bool         # the peer asked us to
    local: SockAddr | None
    remote: SockAddr | None

    @property
    def backup(self) -> bool:
        return self.backup_local or self.backup_remote


@dataclass(frozen=True)
class SubTuple:
    """MPTCP_GET_SUB_TUPLE: the subflow's two ends."""

    local: SockAddr
    remote: SockAddr


Endpoint = str | tuple[str, int]


def _split(ep: Endpoint | None, default_port: int | None) -> tuple[str | None, int | None]:
    if ep is None:
        return None, default_port
    if isinstance(ep, tuple):
        return ep[0], ep[1] or default_port       # port 0: any
    return ep, default_port


class MptcpSocket:
    """The old enhanced socket API on a connected upstream MPTCP socket (see the module
    docstring). The socket stays the application's: this only reads and steers it."""

    def __init__(self, sock: socket.socket, *, timeout: float = 5.0) -> None:
        if not sockopt.is_mptcp(sock):
            raise sockopt.NotMptcp("not an MPTCP socket: open it with IPPROTO_MPTCP (262)")
        self.sock = sock
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<MptcpSocket fd={self.sock.fileno()}>"

    @property
    def token(self) -> int:
        """The connection's local token (what the path manager knows it by)."""
        token = sockopt.mptcp_info(self.sock).mptcpi_token or 0
        if not token:
            raise BadInput("the socket is not connected (no MPTCP token yet)")
        return token

    # -- reading (no path manager needed) ----------------------------------------------------

    def get_sub_ids(self) -> list[SubStatus]:
        """MPTCP_GET_SUB_IDS: every subflow with its id, state and backup flags."""
        full = sockopt.full_info(self.sock)
        fd = sockdiag.netns_of(self.sock)
        try:
            diag = sockdiag.SockDiag(fd)
        finally:
            os.close(fd)
        out = []
        with diag:
            for s in full.subflows:
                d = diag.subflow(s.local, s.remote) if s.local and s.remote else None
                out.append(SubStatus(
                    s.id, s.tcp_info.state if s.tcp_info else "?",
                    bool(d and d.fully_established),
                    bool(d and d.backup_local), bool(d and d.backup_remote), s.local, s.remote))
        return out

    def _subflow(self, sub_id: int) -> Subflow:
        return sockopt.full_info(self.sock).subflow(sub_id)

    def get_sub_tuple(self, sub_id: int) -> SubTuple:
        """MPTCP_GET_SUB_TUPLE: the local and remote address and port of subflow `sub_id`."""
        s = self._subflow(sub_id)
        assert s.local is not None and s.remote is not None
        return SubTuple(s.local, s.remote)

    def sub_getsockopt(self, sub_id: int, level: int = socket.IPPROTO_TCP,
                       optname: int = socket.TCP_INFO) -> TcpInfo:
        """MPTCP_SUB_GETSOCKOPT: upstream reads one thing per subflow, its TCP_INFO
        (MPTCP_FULL_INFO / MPTCP_TCPINFO). Anything else is per connection."""
        if (level, optname) != (socket.IPPROTO_TCP, socket.TCP_INFO):
            name = _option_name(level, optname)
            where = "it is the same on every subflow: read it from the MPTCP socket" \
                if (level, optname) in PROPAGATED else \
                "read the MPTCP socket's own value with sock.getsockopt"
            raise NotPerSubflow(f"upstream Linux reads only TCP_INFO per subflow, not {name}; "
                                f"{where}")
        info = self._subflow(sub_id).tcp_info
        assert info is not None
        return info

    # -- steering (the userspace path manager) -----------------------------------------------

    def _pm(self) -> Any:
        from mptcplab.pm import PathManager

        fd = sockdiag.netns_of(self.sock)
        try:
            return PathManager(netns=fd), fd
        except BaseException:
            os.close(fd)
            raise

    def _command(self, fn: Any, what: str) -> Any:
        from mptcplab.pm import PmError

        try:
            return fn()
        except PmError as exc:
            if "userspace PM not selected" in (exc.extack or ""):
                raise InKernelPathManager(
                    f"{what}: this connection is managed by the in-kernel path manager, which "
                    "takes no per-connection commands (it follows endpoints, for every "
                    "connection); use the userspace path manager: net.mptcp.pm_type = 1 in the "
                    "namespace before the connection is made") from None
            raise

    def open_sub_tuple(self, local: Endpoint, remote: Endpoint | None = None, *,
                       backup: bool = False, timeout: float | None = None) -> SubStatus:
        """MPTCP_OPEN_SUB_TUPLE: open a subflow from `local` ("addr" or (addr, port)) to
        `remote` (default: the initial subflow's remote address and port; a bare address takes
        that port), as a backup if `backup`. Returns once the peer has accepted the join
        (the subflow is fully established); LabError if it refused or time ran out."""
        from mptcplab.pm import PmError

        timeout = self.timeout if timeout is None else timeout
        token = self.token
        first = sockopt.full_info(self.sock, with_tcp_info=False)
        initial = min(first.subflows, key=lambda s: s.id) if first.subflows else None
        laddr, lport = _split(local, None)
        raddr, rport = _split(remote, initial.remote.port if initial and initial.remote
                              else None)
        if raddr is None:
            if initial is None or initial.remote is None:
                raise BadInput("no remote address given and the connection has no subflow")
            raddr = initial.remote.addr
        if rport is None:
            raise BadInput("no remote port given")
        before = {s.id for s in first.subflows}
        what = f"opening a subflow {endpoint(str(laddr), lport or None)} -> " \
               f"{endpoint(raddr, rport)}"
        pm, fd = self._pm()
        try:
            pm.subscribe()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self._command(lambda: pm.subflow_create(token, laddr, raddr, rport,
                                                            local_port=lport, backup=backup),
                                  what)
                    break
                except PmError as exc:
                    # ENOTCONN: the connection is not fully established yet (the peer has
                    # not acknowledged at the data level); it will be in a moment.
                    if exc.errno != errno.ENOTCONN:
                        raise
                    if time.monotonic() > deadline:
                        raise LabError(f"{what}: the connection is not fully established "
                                       f"after {timeout:g} s (no data-level ACK from the peer "
                                       "yet; move some data first)") from None
                    time.sleep(0.02)
            while True:
                new = [s for s in self.get_sub_ids() if s.id not in before
                       and s.local and s.remote and s.local.addr == laddr
                       and (lport is None or s.local.port == lport)
                       and s.remote.addr == raddr and s.remote.port == rport]
                if new and new[-1].fully_established:
                    return new[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    for sub in new:         # do not leave a half-open join behind
                        if sub.local and sub.remote:
                            with contextlib.suppress(LabError):
                                pm.subflow_destroy(token, sub.local.addr, sub.local.port,
                                                   sub.remote.addr, sub.remote.port)
                    raise LabError(f"{what}: not established within {timeout:g} s")
                for ev in pm.events(timeout=min(left, 0.05)):
                    if ev.KIND == "sub_closed" and ev.token == token and ev.saddr == laddr \
                            and ev.daddr == raddr and ev.dport == rport \
                            and (lport is None or ev.sport == lport):
                        why = f"reset reason {ev.reset_reason}" if ev.reset_reason \
                            is not None else f"error {ev.error}" if ev.error else "closed"
                        raise LabError(f"{what}: the subflow did not survive the join "
                                       f"({why}; the peer may have refused it: its subflow "
                                       "limit, or no such address)")
        finally:
            pm.close()
            os.close(fd)

    def close_sub_id(self, sub_id: int, *, timeout: float | None = None) -> None:
        """MPTCP_CLOSE_SUB_ID: close subflow `sub_id` (SUBFLOW_DESTROY with its four-tuple);
        returns once the kernel no longer lists it."""
        timeout = self.timeout if timeout is None else timeout
        token = self.token
        s = self._subflow(sub_id)
        assert s.local is not None and s.remote is not None
        what = f"closing subflow {sub_id} ({s.local} -> {s.remote})"
        pm, fd = self._pm()
        try:
            self._command(lambda: pm.subflow_destroy(token, s.local.addr, s.local.port,
                                                     s.remote.addr, s.remote.port), what)
        finally:
            pm.close()
            os.close(fd)
        until(lambda: all(x.id != sub_id for x in
                          sockopt.full_info(self.sock, with_tcp_info=False).subflows),
              f"subflow {sub_id} to leave the kernel's list", timeout, interval=0.01,
              error=lambda text: LabError(f"{what}: {text}"))

    def set_backup(self, sub_id: int, backup: bool = True, *,
                   timeout: float | None = None) -> SubStatus:
        """The old low_prio bit: ask the peer to use subflow `sub_id` only as a backup (or no
        longer), by SET_FLAGS with the connection's token; the kernel sends MP_PRIO."""
        timeout = self.timeout if timeout is None else timeout
        token = self.token
        s = self._subflow(sub_id)
        assert s.local is not None and s.remote is not None
        what = f"marking subflow {sub_id} {'backup' if backup else 'not backup'}"
        pm, fd = self._pm()
        try:
            self._command(lambda: pm.set_flags(token, s.local.addr, s.remote.addr, backup,
                                               local_port=s.local.port,
                                               remote_port=s.remote.port), what)
        finally:
            pm.close()
            os.close(fd)
        def changed() -> SubStatus | None:
            now = next((x for x in self.get_sub_ids() if x.id == sub_id), None)
            if now is None:
                raise LabError(f"{what}: the subflow closed meanwhile")
            return now if now.backup_local == backup else None

        return until(changed, "the kernel to change it", timeout, interval=0.01,
                     error=lambda text: LabError(f"{what}: {text}"))

    def sub_setsockopt(self, sub_id: int, level: int, optname: int, value: Any, *,
                       all_subflows: bool = False) -> None:
        """MPTCP_SUB_SETSOCKOPT. Upstream Linux sets nothing on one subflow alone; options it
        propagates (TCP_NODELAY, TCP_CONGESTION, IP_TOS, SO_MARK, SO_PRIORITY, keepalive ...)
        are set on the MPTCP socket and reach every subflow: pass `all_subflows=True` to do
        that knowingly. The backup bit is `set_backup`."""
        self._subflow(sub_id)           # an unknown id is an error whatever the option
        name = _option_name(level, optname)
        if not all_subflows:
            if (level, optname) in PROPAGATED:
                raise NotPerSubflow(
                    f"upstream Linux cannot set {name} on subflow {sub_id} alone: set on the "
                    "MPTCP socket it applies to every subflow, present and future (pass "
                    "all_subflows=True to do that); the backup bit is set_backup()")
            raise NotPerSubflow(f"upstream Linux cannot set {name} on one subflow")
        try:
            self.sock.setsockopt(level, optname, value)
        except OSError as exc:
            raise NotPerSubflow(f"the MPTCP socket refuses {name}: {exc.strerror}") from None


