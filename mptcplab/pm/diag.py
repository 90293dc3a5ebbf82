"""What is open right now, from sock_diag: MPTCP connections with their tokens, and every
subflow with its MPTCP ids (the kernel's `subflow_get_info` ULP attributes).

A path manager started after connections were opened never saw their CREATED events (mptcpd's
users run into exactly that); the daemon reads these dumps at start and after an event
overflow (ENOBUFS) to learn them. `ss -M` and `ss -ti` read the same dumps.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from mptcplab.pm.netlink import (
    HDR,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
    _tlvs,
)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
IPPROTO_MPTCP = 262
INET_DIAG_INFO = 2
INET_DIAG_ULP_INFO = 19
INET_DIAG_REQ_PROTOCOL = 3
INET_ULP_INFO_NAME = 1
INET_ULP_INFO_MPTCP = 3
MPTCP_SUBFLOW_ATTR_TOKEN_REM = 1
MPTCP_SUBFLOW_ATTR_TOKEN_LOC = 2
MPTCP_SUBFLOW_ATTR_FLAGS = 8
MPTCP_SUBFLOW_ATTR_ID_REM = 9
MPTCP_SUBFLOW_ATTR_ID_LOC = 10
MPTCP_SUBFLOW_FLAG_JOIN_LOC = 1 << 3
MPTCP_SUBFLOW_FLAG_BKUP_REM = 1 << 4
MPTCP_SUBFLOW_FLAG_BKUP_LOC = 1 << 5
MPTCP_SUBFLOW_FLAG_FULLY_ESTABLISHED = 1 << 6
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_LISTEN = 10
ALL_STATES = 0xFFFFFFFF
_REQ = struct.Struct("=BBBxI")           # inet_diag_req_v2 head; then the 48-byte sockid
_MSG = struct.Struct("=BBBB")            # inet_diag_msg head (family, state, timer, retrans)
_SOCKID_LEN = 48


@dataclass(frozen=True)
class MptcpConn:
    """An MPTCP socket (MPTCP sock_diag + MPTCP_INFO): a connection, or a listener."""

    token: int
    family: int
    saddr: str
    sport: int
    daddr: str
    dport: int
    state: int
    subflows: int = 0          # additional subflows (mptcpi_subflows)
    flags: int = 0             # mptcpi_flags

    @property
    def listening(self) -> bool:
        return self.state == TCP_LISTEN


@dataclass(frozen=True)
class Subflow:
    """A TCP subflow of an MPTCP connection, as sock_diag shows it."""

    token: int                 # the local token (MPTCP_SUBFLOW_ATTR_TOKEN_LOC)
    family: int
    saddr: str
    sport: int
    daddr: str
    dport: int
    state: int
    loc_id: int
    rem_id: int
    flags: int
    ifindex: int = 0
    bytes_acked: int = 0       # tcp_info: bytes this end sent that were acknowledged
    bytes_received: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def backup(self) -> bool:
        """This end asked for the subflow to be a backup (MP_JOIN B flag or MP_PRIO)."""
        return bool(self.flags & MPTCP_SUBFLOW_FLAG_BKUP_LOC)

    @property
    def joined(self) -> bool:
        """Opened by MP_JOIN from this end (not the initial subflow, nor a join received)."""
        return bool(self.flags & MPTCP_SUBFLOW_FLAG_JOIN_LOC)


def _open() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_SOCK_DIAG)
    sock.bind((0, 0))
    return sock


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


def _dump(sock: socket.socket, family: int, protocol: int, ext: int,
          states: int = ALL_STATES) -> list[bytes]:
    """One inet_diag dump; the payloads (inet_diag_msg + attributes)."""
    req = _REQ.pack(family, socket.IPPROTO_TCP, ext, states) + b"\0" * _SOCKID_LEN
    if protocol != socket.IPPROTO_TCP:     # sdiag_protocol is a u8: MPTCP goes in an attribute
        req += struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, protocol)
    sock.send(HDR.pack(16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
              + req)
    out: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _f, _seq, _pid = HDR.unpack_from(data, off)
            if length < 16:
                return out
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + 16)[0]
                if code:
                    raise NetlinkError(code, "", "sock_diag dump")
                return out
            out.append(data[off + 16:off + length])
            off += (length + 3) & ~3


def _head(payload: bytes) -> tuple[int, int, int, str, int, str, int, int]:
    family, state, _timer, _retrans = _MSG.unpack_from(payload, 0)
    sport, dport = struct.unpack_from(">HH", payload, 4)
    src = payload[8:24]
    dst = payload[24:40]
    ifindex = struct.unpack_from("=I", payload, 40)[0]
    return family, state, sport, _addr(family, src), dport, _addr(family, dst), ifindex, 72


def connections_here() -> list[MptcpConn]:
    """MPTCP sockets of the calling thread's namespace (listeners included)."""
    out: list[MptcpConn] = []
    with _open() as sock:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for p in _dump(sock, fam, IPPROTO_MPTCP, 1 << (INET_DIAG_INFO - 1)):
                family, state, sport, saddr, dport, daddr, _if, body = _head(p)
                token = subflows = flags = 0
                for atype, s, e in _tlvs(p, body, len(p)):
                    if atype == INET_DIAG_INFO and e - s >= 16:
                        subflows = p[s]
                        flags, token = struct.unpack_from("=II", p, s + 8)
                out.append(MptcpConn(token, family, saddr, sport, daddr, dport, state,
                                     subflows, flags))
    return out


def subflows_here() -> list[Subflow]:
    """TCP sockets of the calling thread's namespace that are MPTCP subflows."""
    out: list[Subflow] = []
    with _open() as sock:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for p in _dump(sock, fam, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1)):
                family, state, sport, saddr, dport, daddr, ifindex, body = _head(p)
                ulp: dict[int, int] = {}
                acked = received = 0
                is_mptcp = False
                for atype, s, e in _tlvs(p, body, len(p)):
                    if atype == INET_DIAG_INFO and e - s >= 136:
                        acked, received = struct.unpack_from("=QQ", p, s + 120)
                    elif atype == INET_DIAG_ULP_INFO:
                        for t, us, ue in _tlvs(p, s, e):
                            if t == INET_ULP_INFO_NAME:
                                is_mptcp = p[us:ue].rstrip(b"\0") == b"mptcp"
                            elif t == INET_ULP_INFO_MPTCP:
                                for a, vs, ve in _tlvs(p, us, ue):
                                    size = ve - vs
                                    ulp[a] = int.from_bytes(p[vs:ve], "little") \
                                        if size in (1, 2, 4, 8) else 0
                if not is_mptcp or MPTCP_SUBFLOW_ATTR_TOKEN_LOC not in ulp:
                    continue
                out.append(Subflow(ulp[MPTCP_SUBFLOW_ATTR_TOKEN_LOC], family, saddr, sport,
                                   daddr, dport, state, ulp.get(MPTCP_SUBFLOW_ATTR_ID_LOC, 0),
                                   ulp.get(MPTCP_SUBFLOW_ATTR_ID_REM, 0),
                                   ulp.get(MPTCP_SUBFLOW_ATTR_FLAGS, 0), ifindex, acked,
                                   received))
    return out


def snapshot_here() -> tuple[list[MptcpConn], list[Subflow]]:
    return connections_here(), subflows_here()
