"""The kernel's sock_diag view of MPTCP: what `ss -M` and `ss -ti` read, over NETLINK_SOCK_DIAG.

    connections(netns_fd) -> list[DiagConnection]   MPTCP sockets with their struct mptcp_info
    subflows(netns_fd, token=) -> list[DiagSubflow]  TCP subflows with tcp_info and the MPTCP ULP
                                                     attributes (tokens, address ids, flags:
                                                     backup asked by us / by the peer)
    SockDiag(netns_fd)                               the same, over one kept netlink socket
    netns_of(sock) -> fd                             the namespace a socket lives in (SIOCGSKNS)

Socket options (mptcplab.sockopt) answer for one connection from its own socket; this answers
for a whole namespace, from outside the application, and carries what the options do not: the
per-subflow backup flags and address ids. The two are independent kernel paths to the same
state, which the tests compare.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from mptcplab import namespaces as ns
from mptcplab.errors import LabError
from mptcplab.sockopt import IPPROTO_MPTCP, MptcpInfo, SockAddr, TcpInfo

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2
INET_DIAG_ULP_INFO = 19
INET_DIAG_REQ_PROTOCOL = 3
INET_ULP_INFO_NAME = 1
INET_ULP_INFO_MPTCP = 3
SIOCGSKNS = 0x894C
TCP_ESTABLISHED, TCP_LISTEN = 1, 10

MPTCP_SUBFLOW_ATTR_TOKEN_REM = 1
MPTCP_SUBFLOW_ATTR_TOKEN_LOC = 2
MPTCP_SUBFLOW_ATTR_FLAGS = 8
MPTCP_SUBFLOW_ATTR_ID_REM = 9
MPTCP_SUBFLOW_ATTR_ID_LOC = 10

# MPTCP_SUBFLOW_FLAG_* (uapi mptcp.h) with the letters `ss -ti` prints for them.
SUBFLOW_FLAGS = {1 << 0: ("M", "mcap_rem"), 1 << 1: ("m", "mcap_loc"),
                 1 << 2: ("J", "join_rem"), 1 << 3: ("j", "join_loc"),
                 1 << 4: ("B", "bkup_rem"), 1 << 5: ("b", "bkup_loc"),
                 1 << 6: ("e", "fully_established"), 1 << 7: ("c", "connected"),
                 1 << 8: ("v", "mapvalid")}
FLAG_BKUP_REM, FLAG_BKUP_LOC, FLAG_FULLY_ESTABLISHED = 1 << 4, 1 << 5, 1 << 6

_REQ = struct.Struct("=BBBBI4s16s16sI8s")      # struct inet_diag_req_v2 (56 bytes)
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # struct inet_diag_msg (72 bytes)
_NLH = struct.Struct("=IHHII")


@dataclass(frozen=True)
class DiagSubflow:
    """One TCP subflow as inet_diag shows it (what one `ss -ti` entry says)."""

    local: SockAddr
    remote: SockAddr
    state: int
    tcp_info: TcpInfo | None
    token_loc: int | None = None
    token_rem: int | None = None
    id_loc: int | None = None
    id_rem: int | None = None
    flags: int = 0
    ifindex: int = 0             # the interface the subflow is bound to (0: none)

    @property
    def flag_letters(self) -> str:
        """The flags as `ss -ti` prints them (`flags:Jjecv`)."""
        return "".join(letter for bit, (letter, _) in SUBFLOW_FLAGS.items() if self.flags & bit)

    @property
    def backup_local(self) -> bool:
        """We asked the peer to treat this subflow as backup (MP_JOIN B flag or MP_PRIO sent)."""
        return bool(self.flags & FLAG_BKUP_LOC)

    @property
    def backup_remote(self) -> bool:
        """The peer asked us to treat it as backup (B flag or MP_PRIO received)."""
        return bool(self.flags & FLAG_BKUP_REM)

    @property
    def fully_established(self) -> bool:
        """The peer acknowledged the subflow's MP_CAPABLE/MP_JOIN third ACK."""
        return bool(self.flags & FLAG_FULLY_ESTABLISHED)

    @property
    def backup(self) -> bool:
        """Used only as a backup: the kernel's scheduler honours either side's request."""
        return self.backup_local or self.backup_remote


@dataclass(frozen=True)
class DiagConnection:
    """One MPTCP socket as inet_diag shows it (what one `ss -M` entry says)."""

    local: SockAddr
    remote: SockAddr
    state: int
    mptcp_info: MptcpInfo | None
    subflows: list[DiagSubflow] = field(default_factory=list)


def netns_of(sock: socket.socket) -> int:
    """A new fd on the network namespace `sock` was created in (close it when done)."""
    try:
        return fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    except OSError as exc:
        raise LabError(f"cannot find the socket's namespace (SIOCGSKNS): {exc.strerror}") from None


def _attrs(data: bytes, off: int = 0) -> Iterator[tuple[int, bytes]]:
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        yield kind & 0x3FFF, data[off + 4:off + length]
        off += (length + 3) & ~3


def _addr(family: int, raw: bytes, port: bytes) -> SockAddr:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.IPv4Address(raw[:4]) if family == socket.AF_INET else ipaddress.IPv6Address(raw)
    return SockAddr.of(family, str(ip), int.from_bytes(port, "big"))


INET_DIAG_NOCOOKIE = b"\xff" * 8


def _ip_bytes(family: int, addr: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    if family == socket.AF_INET6 and ip.version == 4:
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")      # an IPv4 subflow of an IPv6 socket
    return ip.packed.ljust(16, b"\0")


def _dump(sk: socket.socket, family: int, protocol: int,
          exact: tuple[SockAddr, SockAddr] | None = None
          ) -> list[tuple[tuple[Any, ...], dict[int, bytes]]]:
    """One SOCK_DIAG_BY_FAMILY request over `sk` (a NETLINK_SOCK_DIAG socket: it answers for
    the namespace it was opened in): (inet_diag_msg fields, attributes) per socket. A dump
    walks the whole host's hash table (other namespaces' sockets included, skipped by the
    kernel), which costs milliseconds on a busy host; `exact` (local, remote) looks one socket
    up by its four-tuple instead."""
    ext = 1 << (INET_DIAG_INFO - 1)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    sockid: tuple[bytes, bytes, bytes, int, bytes] = (b"", b"", b"", 0, b"")
    if exact is not None:
        local, remote = exact
        flags = NLM_F_REQUEST
        sockid = (local.port.to_bytes(2, "big") + remote.port.to_bytes(2, "big"),
                  _ip_bytes(family, local.addr), _ip_bytes(family, remote.addr), 0,
                  INET_DIAG_NOCOOKIE)
    req = _REQ.pack(family, protocol & 0xFF, ext, 0, 0xFFFFFFFF, *sockid)
    if protocol > 0xFF:   # IPPROTO_MPTCP does not fit the u8: say it in an attribute
        req += struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, protocol)
    sk.sendto(_NLH.pack(_NLH.size + len(req), SOCK_DIAG_BY_FAMILY, flags, 1, 0) + req,
              (0, 0))
    out: list[tuple[tuple[Any, ...], dict[int, bytes]]] = []
    while True:
        data = sk.recv(1 << 16)
        off = 0
        while off + _NLH.size <= len(data):
            length, kind, _, _, _ = _NLH.unpack_from(data, off)
            if length < _NLH.size or off + length > len(data):
                raise LabError(f"sock_diag dump: a malformed netlink message (length {length})")
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + _NLH.size)
                if err == -errno.ENOENT:   # no such socket, or no handler (no mptcp_diag)
                    return out
                raise LabError(f"sock_diag dump: {os.strerror(-err)}")
            body = data[off + _NLH.size:off + length]
            msg = _MSG.unpack_from(body)
            out.append((msg, dict(_attrs(body, _MSG.size))))
            off += (length + 3) & ~3
            if exact is not None:
                return out


def _subflow(msg: tuple[Any, ...], attrs: dict[int, bytes]) -> DiagSubflow | None:
    ulp = dict(_attrs(attrs.get(INET_DIAG_ULP_INFO, b"")))
    if ulp.get(INET_ULP_INFO_NAME, b"").rstrip(b"\0") != b"mptcp":
        return None
    sf = dict(_attrs(ulp.get(INET_ULP_INFO_MPTCP, b"")))

    def u(kind: int, fmt: str) -> int | None:
        return struct.unpack_from(fmt, sf[kind])[0] if kind in sf else None

    family, state, _, _, sport, dport, src, dst = msg[:8]
    info = attrs.get(INET_DIAG_INFO)
    return DiagSubflow(_addr(family, src, sport), _addr(family, dst, dport), state,
                       TcpInfo.from_bytes(info) if info else None,
                       u(MPTCP_SUBFLOW_ATTR_TOKEN_LOC, "=I"), u(MPTCP_SUBFLOW_ATTR_TOKEN_REM, "=I"),
                       u(MPTCP_SUBFLOW_ATTR_ID_LOC, "=B"), u(MPTCP_SUBFLOW_ATTR_ID_REM, "=B"),
                       u(MPTCP_SUBFLOW_ATTR_FLAGS, "=I") or 0, msg[8])


class SockDiag:
    """A NETLINK_SOCK_DIAG socket opened in a namespace (an fd on it, or None: this thread's),
    kept for repeated dumps (a monitor reads one every second)."""

    def __init__(self, netns_fd: int | None = None) -> None:
        def make() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)

        self.sock = make() if netns_fd is None else ns.run(netns_fd, make)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def subflows(self, token: int | None = None) -> list[DiagSubflow]:
        """Every MPTCP subflow of the namespace, or those of the connection whose local token
        is `token`."""
        out = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            for msg, attrs in _dump(self.sock, fam, socket.IPPROTO_TCP):
                sf = _subflow(msg, attrs)
                if sf is not None and (token is None or sf.token_loc == token):
                    out.append(sf)
        return out

    def subflow(self, local: SockAddr, remote: SockAddr) -> DiagSubflow | None:
        """The subflow with this four-tuple (as MPTCP_FULL_INFO gives it), looked up rather
        than dumped; None when the kernel has no such TCP socket (any more)."""
        for msg, attrs in _dump(self.sock, local.family, socket.IPPROTO_TCP, (local, remote)):
            return _subflow(msg, attrs)
        return None

    def connections(self) -> list[DiagConnection]:
        """Every MPTCP socket of the namespace with its mptcp_info and subflows (matched by
        token). Listeners and fallen-back connections carry no token."""
        conns = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            for msg, attrs in _dump(self.sock, fam, IPPROTO_MPTCP):
                family, state, _, _, sport, dport, src, dst = msg[:8]
                info = attrs.get(INET_DIAG_INFO)
                conns.append(DiagConnection(_addr(family, src, sport),
                                            _addr(family, dst, dport), state,
                                            MptcpInfo.from_bytes(info) if info else None))
        subs = self.subflows()
        for c in conns:
            token = c.mptcp_info.mptcpi_token if c.mptcp_info else None
            if token:
                c.subflows.extend(s for s in subs if s.token_loc == token)
        return conns


def subflows(netns_fd: int | None = None, token: int | None = None) -> list[DiagSubflow]:
    """Every MPTCP subflow in the namespace (None: this thread's), or those of the connection
    whose local token is `token`."""
    with SockDiag(netns_fd) as d:
        return d.subflows(token)


def connections(netns_fd: int | None = None) -> list[DiagConnection]:
    """Every MPTCP socket in the namespace with its mptcp_info and subflows."""
    with SockDiag(netns_fd) as d:
        return d.connections()


def subflows_of(sock: socket.socket, token: int) -> list[DiagSubflow]:
    """The subflows of the connection with local token `token`, looked up in the namespace the
    socket lives in (wherever this thread is)."""
    fd = netns_of(sock)
    try:
        return subflows(fd, token)
    finally:
        os.close(fd)
