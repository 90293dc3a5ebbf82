"""MPTCP socket options (level SOL_MPTCP = 284) on kernel sockets, as typed results.

    mptcp_info(sock) -> MptcpInfo            MPTCP_INFO: struct mptcp_info
    tcp_infos(sock) -> list[TcpInfo]         MPTCP_TCPINFO: struct tcp_info of every subflow
    tcp_info(sock) -> TcpInfo                TCP_INFO: plain TCP, or a fallen-back connection
    subflow_addrs(sock) -> list[SubflowAddrs]   MPTCP_SUBFLOW_ADDRS: each subflow's two ends
    full_info(sock) -> FullInfo              MPTCP_FULL_INFO: ids, addresses, tcp_info and
                                             mptcp_info in one consistent call
    is_mptcp(sock), is_fallback(sock)

Python's `socket.getsockopt(level, name, buflen)` hands the kernel a zeroed buffer, but three of
these options read a header the caller writes into that buffer (sizes, and for FULL_INFO two
user-space pointers), so the calls go through libc's getsockopt with ctypes.

The kernel copies min(what we offer, its struct) and says how much in optlen: each struct is
decoded by that length, so the same code reads older and newer kernels. A field the kernel did
not send is None (and absent from `as_dict()`); a kernel newer than these layouts sends more
than we know and the rest is ignored. Layouts: include/uapi/linux/mptcp.h and tcp.h of Linux
6.18 (sizeof mptcp_info 96, tcp_info 280, mptcp_subflow_info 264), field names verbatim.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

from mptcplab.describe import endpoint
from mptcplab.errors import BadInput, LabError, MissingTool

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_FULL_INFO = 4

MPTCP_INFO_FLAG_FALLBACK = 1 << 0
MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED = 1 << 1

OPTION_NAMES = {MPTCP_INFO: "MPTCP_INFO", MPTCP_TCPINFO: "MPTCP_TCPINFO",
                MPTCP_SUBFLOW_ADDRS: "MPTCP_SUBFLOW_ADDRS", MPTCP_FULL_INFO: "MPTCP_FULL_INFO"}

# What we offer the kernel per struct: more than any layout below, so a newer kernel's larger
# struct is not cut short by us (the kernel answers with min(offer, its size)).
_OFFER = 512
_SUBFLOW_DATA = struct.Struct("=IIII")          # struct mptcp_subflow_data (aligned(8), 16)
_FULL_INFO_HDR = struct.Struct("=IIIIIIQQ")     # struct mptcp_full_info up to mptcp_info (40)
_SOCKADDR_STORAGE = 128
_FIRST_ROOM = 8                                 # subflows the first call has room for

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV", 13: "BOUND_INACTIVE"}
TCPI_OPTIONS = {1: "ts", 2: "sack", 4: "wscale", 8: "ecn", 16: "ecn_seen", 32: "syn_data",
                64: "usec_ts", 128: "tfo_child"}


class SockoptError(LabError):
    """A socket option could not be read; the message says why in words."""


class NotMptcp(SockoptError):
    status = BadInput.status


class Fallback(SockoptError):
    """The connection fell back to plain TCP: the kernel has no MPTCP state to report."""

    def __init__(self, what: str = "") -> None:
        super().__init__((f"{what}: " if what else "") + "this connection fell back to plain TCP")


# -- uapi structs as dataclasses ---------------------------------------------------------------

def _c(ctype: Any, bits: int | None = None) -> Any:
    """A struct member: None until the kernel sends it."""
    return field(default=None, metadata={"c": ctype, "bits": bits})


u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
_CODES = {u8: "B", u16: "H", u32: "I", u64: "Q"}


class _Uapi:
    """Base of the struct dataclasses: the ctypes twin (`_c`) is built from the field order,
    so each layout is written once, in the header's order, and ctypes places the holes."""

    _c: ClassVar[type[ctypes.Structure]]
    kernel_len: int

    @classmethod
    def size(cls) -> int:
        return ctypes.sizeof(cls._c)

    _whole: ClassVar[struct.Struct]
    _units: ClassVar[list[tuple[str | list[tuple[str, int, int]], int]]]

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        """Decode what the kernel copied: members that lie wholly inside `data` are set."""
        n = len(data)
        if n >= cls._whole.size:        # every member there: one unpack
            values: dict[str, Any] = {}
            for (what, _), v in zip(cls._units, cls._whole.unpack_from(data)):
                if isinstance(what, str):
                    values[what] = v
                else:
                    for name, shift, width in what:
                        values[name] = v >> shift & ((1 << width) - 1)
            values["kernel_len"] = n
            # A frozen dataclass's __init__ sets each of ~70 members through
            # object.__setattr__; filling the instance dict is 5x faster (the once-a-second
            # monitor reads one per subflow). Members absent keep the class default, None.
            obj = object.__new__(cls)
            obj.__dict__.update(values)
            return obj
        return cls._from_partial(data)

    @classmethod
    def _from_partial(cls, data: bytes) -> Any:
        """An older kernel's shorter struct: member by member, through the ctypes twin."""
        c = cls._c
        n = len(data)
        s = c.from_buffer_copy(data[:ctypes.sizeof(c)].ljust(ctypes.sizeof(c), b"\0"))
        values = {name: getattr(s, name) for name, ctype, *_ in c._fields_
                  if getattr(c, name).offset + ctypes.sizeof(ctype) <= n}
        return cls(**values, kernel_len=n)

    def as_dict(self) -> dict[str, Any]:
        """The members the kernel sent, by their uapi names."""
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if "c" in f.metadata and getattr(self, f.name) is not None}


def _uapi(cls: type) -> Any:
    cls = dataclass(frozen=True)(cls)
    members = []
    for f in fields(cls):
        if "c" in f.metadata:
            bits = f.metadata["bits"]
            members.append((f.name, f.metadata["c"]) if bits is None
                           else (f.name, f.metadata["c"], bits))
    c = type(f"struct_{cls.__name__}", (ctypes.Structure,), {"_fields_": members})
    cls._c = c
    # The same layout as one struct.Struct, for the common case of a whole struct: ctypes
    # gives the offsets (holes included); bit fields sharing a unit are cut out after.
    units: list[tuple[str | list[tuple[str, int, int]], int]] = []
    fmt, pos = "=", 0
    for name, ctype, *bits in members:
        off = getattr(c, name).offset
        if bits and units and units[-1][1] == off and isinstance(units[-1][0], list):
            group = units[-1][0]
            group.append((name, sum(w for _, _, w in group), bits[0]))
            continue
        units.append(([(name, 0, bits[0])] if bits else name, off))
        fmt += (f"{off - pos}x" if off > pos else "") + _CODES[ctype]
        pos = off + ctypes.sizeof(ctype)
    cls._units = units
    cls._whole = struct.Struct(fmt)
    return cls


@_uapi
class MptcpInfo(_Uapi):
    """struct mptcp_info (MPTCP_INFO; also the tail of MPTCP_FULL_INFO and what `ss -M` shows).
    Counters of the in-kernel path manager (`*_max`) are 0 under the userspace PM."""

    mptcpi_subflows: int | None = _c(u8)
    mptcpi_add_addr_signal: int | None = _c(u8)
    mptcpi_add_addr_accepted: int | None = _c(u8)
    mptcpi_subflows_max: int | None = _c(u8)
    mptcpi_add_addr_signal_max: int | None = _c(u8)
    mptcpi_add_addr_accepted_max: int | None = _c(u8)
    mptcpi_flags: int | None = _c(u32)
    mptcpi_token: int | None = _c(u32)
    mptcpi_write_seq: int | None = _c(u64)
    mptcpi_snd_una: int | None = _c(u64)
    mptcpi_rcv_nxt: int | None = _c(u64)
    mptcpi_local_addr_used: int | None = _c(u8)
    mptcpi_local_addr_max: int | None = _c(u8)
    mptcpi_csum_enabled: int | None = _c(u8)
    mptcpi_retransmits: int | None = _c(u32)
    mptcpi_bytes_retrans: int | None = _c(u64)
    mptcpi_bytes_sent: int | None = _c(u64)
    mptcpi_bytes_received: int | None = _c(u64)
    mptcpi_bytes_acked: int | None = _c(u64)
    mptcpi_subflows_total: int | None = _c(u8)
    mptcpi_endp_laminar_max: int | None = _c(u8)
    mptcpi_endp_fullmesh_max: int | None = _c(u8)
    reserved: int | None = _c(u8)
    mptcpi_last_data_sent: int | None = _c(u32)
    mptcpi_last_data_recv: int | None = _c(u32)
    mptcpi_last_ack_recv: int | None = _c(u32)
    kernel_len: int = 0

    @property
    def fallback(self) -> bool:
        return bool((self.mptcpi_flags or 0) & MPTCP_INFO_FLAG_FALLBACK)

    @property
    def remote_key_received(self) -> bool:
        return bool((self.mptcpi_flags or 0) & MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED)


@_uapi
class TcpInfo(_Uapi):
    """struct tcp_info of one subflow (MPTCP_TCPINFO, MPTCP_FULL_INFO; what `ss -ti` shows).
    Times in microseconds (rtt, rttvar, rto, ato, min_rtt) or milliseconds (last_*).

    The last four bytes are two u16 (accecn_fail_mode, accecn_opt_seen) on 6.18; later kernels
    repack them as bit fields (ecn_mode:2, accecn_opt_seen:2, accecn_fail_mode:4, options2:24)
    at the same offset, which no length can tell apart."""

    tcpi_state: int | None = _c(u8)
    tcpi_ca_state: int | None = _c(u8)
    tcpi_retransmits: int | None = _c(u8)
    tcpi_probes: int | None = _c(u8)
    tcpi_backoff: int | None = _c(u8)
    tcpi_options: int | None = _c(u8)
    tcpi_snd_wscale: int | None = _c(u8, 4)
    tcpi_rcv_wscale: int | None = _c(u8, 4)
    tcpi_delivery_rate_app_limited: int | None = _c(u8, 1)
    tcpi_fastopen_client_fail: int | None = _c(u8, 2)
    tcpi_rto: int | None = _c(u32)
    tcpi_ato: int | None = _c(u32)
    tcpi_snd_mss: int | None = _c(u32)
    tcpi_rcv_mss: int | None = _c(u32)
    tcpi_unacked: int | None = _c(u32)
    tcpi_sacked: int | None = _c(u32)
    tcpi_lost: int | None = _c(u32)
    tcpi_retrans: int | None = _c(u32)
    tcpi_fackets: int | None = _c(u32)
    tcpi_last_data_sent: int | None = _c(u32)
    tcpi_last_ack_sent: int | None = _c(u32)
    tcpi_last_data_recv: int | None = _c(u32)
    tcpi_last_ack_recv: int | None = _c(u32)
    tcpi_pmtu: int | None = _c(u32)
    tcpi_rcv_ssthresh: int | None = _c(u32)
    tcpi_rtt: int | None = _c(u32)
    tcpi_rttvar: int | None = _c(u32)
    tcpi_snd_ssthresh: int | None = _c(u32)
    tcpi_snd_cwnd: int | None = _c(u32)
    tcpi_advmss: int | None = _c(u32)
    tcpi_reordering: int | None = _c(u32)
    tcpi_rcv_rtt: int | None = _c(u32)
    tcpi_rcv_space: int | None = _c(u32)
    tcpi_total_retrans: int | None = _c(u32)
    tcpi_pacing_rate: int | None = _c(u64)
    tcpi_max_pacing_rate: int | None = _c(u64)
    tcpi_bytes_acked: int | None = _c(u64)
    tcpi_bytes_received: int | None = _c(u64)
    tcpi_segs_out: int | None = _c(u32)
    tcpi_segs_in: int | None = _c(u32)
    tcpi_notsent_bytes: int | None = _c(u32)
    tcpi_min_rtt: int | None = _c(u32)
    tcpi_data_segs_in: int | None = _c(u32)
    tcpi_data_segs_out: int | None = _c(u32)
    tcpi_delivery_rate: int | None = _c(u64)
    tcpi_busy_time: int | None = _c(u64)
    tcpi_rwnd_limited: int | None = _c(u64)
    tcpi_sndbuf_limited: int | None = _c(u64)
    tcpi_delivered: int | None = _c(u32)
    tcpi_delivered_ce: int | None = _c(u32)
    tcpi_bytes_sent: int | None = _c(u64)
    tcpi_bytes_retrans: int | None = _c(u64)
    tcpi_dsack_dups: int | None = _c(u32)
    tcpi_reord_seen: int | None = _c(u32)
    tcpi_rcv_ooopack: int | None = _c(u32)
    tcpi_snd_wnd: int | None = _c(u32)
    tcpi_rcv_wnd: int | None = _c(u32)
    tcpi_rehash: int | None = _c(u32)
    tcpi_total_rto: int | None = _c(u16)
    tcpi_total_rto_recoveries: int | None = _c(u16)
    tcpi_total_rto_time: int | None = _c(u32)
    tcpi_received_ce: int | None = _c(u32)
    tcpi_delivered_e1_bytes: int | None = _c(u32)
    tcpi_delivered_e0_bytes: int | None = _c(u32)
    tcpi_delivered_ce_bytes: int | None = _c(u32)
    tcpi_received_e1_bytes: int | None = _c(u32)
    tcpi_received_e0_bytes: int | None = _c(u32)
    tcpi_received_ce_bytes: int | None = _c(u32)
    tcpi_accecn_fail_mode: int | None = _c(u16)
    tcpi_accecn_opt_seen: int | None = _c(u16)
    kernel_len: int = 0

    @property
    def state(self) -> str:
        return TCP_STATES.get(self.tcpi_state or 0, str(self.tcpi_state))

    @property
    def options(self) -> list[str]:
        return [name for bit, name in TCPI_OPTIONS.items() if (self.tcpi_options or 0) & bit]


def unmapped(addr: str) -> str:
    """An address as people write it: an IPv4-mapped IPv6 address (::ffff:10.0.1.1, what an
    IPv6 socket shows for an IPv4 peer; Python 3.11 prints it ::ffff:a00:101) as its IPv4
    address."""
    if not addr.startswith("::ffff:"):
        return addr
    try:
        mapped = ipaddress.IPv6Address(addr.split("%", 1)[0]).ipv4_mapped
    except ValueError:
        return addr
    return str(mapped) if mapped else addr


class SockAddr(NamedTuple):
    """One end of a subflow (decoded sockaddr_in / sockaddr_in6). `family` is the socket's;
    `addr` is unmapped, so an IPv4 peer of an IPv6 socket reads as IPv4."""

    family: int
    addr: str
    port: int

    @classmethod
    def of(cls, family: int, addr: str, port: int) -> SockAddr:
        return cls(family, unmapped(addr), port)

    def __str__(self) -> str:
        return endpoint(self.addr, self.port)


def sockaddr_from_bytes(data: bytes) -> SockAddr | None:
    """A sockaddr_in/sockaddr_in6 (None for AF_UNSPEC or a length too short to hold it)."""
    if len(data) < 2:
        return None
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET and len(data) >= 8:
        return SockAddr(family, str(ipaddress.IPv4Address(data[4:8])),
                        struct.unpack_from("!H", data, 2)[0])
    if family == socket.AF_INET6 and len(data) >= 24:
        return SockAddr.of(family, str(ipaddress.IPv6Address(data[8:24])),
                           struct.unpack_from("!H", data, 2)[0])
    return None


@dataclass(frozen=True)
class SubflowAddrs:
    """struct mptcp_subflow_addrs: the subflow's local and remote sockaddr."""

    local: SockAddr | None
    remote: SockAddr | None
    kernel_len: int = 0

    @classmethod
    def from_bytes(cls, data: bytes) -> SubflowAddrs:
        return cls(sockaddr_from_bytes(data[:_SOCKADDR_STORAGE]),
                   sockaddr_from_bytes(data[_SOCKADDR_STORAGE:2 * _SOCKADDR_STORAGE]), len(data))

    def as_dict(self) -> dict[str, Any]:
        return {"local": _addr_dict(self.local), "remote": _addr_dict(self.remote)}


def _addr_dict(a: SockAddr | None) -> dict[str, Any] | None:
    return None if a is None else {"addr": a.addr, "port": a.port}


@dataclass(frozen=True)
class Subflow:
    """One entry of MPTCP_FULL_INFO: struct mptcp_subflow_info (the kernel's subflow id, 1 for
    the first subflow and counting up per connection, never reused) and its tcp_info."""

    id: int
    local: SockAddr | None
    remote: SockAddr | None
    tcp_info: TcpInfo | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "local": _addr_dict(self.local), "remote": _addr_dict(self.remote),
                "tcp_info": None if self.tcp_info is None else self.tcp_info.as_dict()}


@dataclass(frozen=True)
class FullInfo:
    """MPTCP_FULL_INFO: every subflow with its id, addresses and tcp_info, and mptcp_info, read
    under one lock so the three agree. `num_subflows` is the kernel's count (it can exceed
    len(subflows) only if subflows appear faster than `full_info` retries)."""

    mptcp_info: MptcpInfo | None
    subflows: list[Subflow]
    num_subflows: int
    size_tcpinfo_kernel: int
    size_sfinfo_kernel: int

    def subflow(self, sub_id: int) -> Subflow:
        for s in self.subflows:
            if s.id == sub_id:
                return s
        known = ", ".join(str(s.id) for s in self.subflows) or "none"
        raise BadInput(f"no subflow with id {sub_id} on this connection (ids: {known})")

    def as_dict(self) -> dict[str, Any]:
        return {"mptcp_info": None if self.mptcp_info is None else self.mptcp_info.as_dict(),
                "num_subflows": self.num_subflows,
                "subflows": [s.as_dict() for s in self.subflows]}


# -- libc getsockopt ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_uint32)]
_libc.getsockopt.restype = ctypes.c_int

Sock = socket.socket | int


def _fd(sock: Sock) -> int:
    fd = sock if isinstance(sock, int) else sock.fileno()
    if fd < 0:
        raise BadInput("the socket is closed")
    return fd


def _raw_getsockopt(fd: int, level: int, name: int, buf: ctypes.Array[Any]) -> int:
    """getsockopt into `buf` (its current bytes are what the kernel reads); the optlen back,
    or -errno."""
    optlen = ctypes.c_uint32(ctypes.sizeof(buf))
    if _libc.getsockopt(fd, level, name, buf, ctypes.byref(optlen)) != 0:
        return -ctypes.get_errno()
    return optlen.value


def protocol(sock: Sock) -> int:
    """SO_PROTOCOL: 262 for an MPTCP socket (fallen back or not), 6 for TCP."""
    buf = ctypes.create_string_buffer(4)
    rc = _raw_getsockopt(_fd(sock), socket.SOL_SOCKET, socket.SO_PROTOCOL, buf)
    if rc < 0:
        _raise(-rc, "SO_PROTOCOL", sock)
    return int.from_bytes(buf.raw[:4], "little")


def is_mptcp(sock: Sock) -> bool:
    """Was the socket opened with IPPROTO_MPTCP? (It may since have fallen back to TCP.)"""
    return protocol(sock) == IPPROTO_MPTCP


def _raise(err: int, what: str, sock: Sock) -> None:
    if err == errno.EBADF:
        raise BadInput(f"{what}: the socket is closed")
    if err == errno.ENOTSOCK:
        raise BadInput(f"{what}: not a socket")
    if err == errno.EOPNOTSUPP and what != "SO_PROTOCOL":
        proto = protocol(sock)
        if proto != IPPROTO_MPTCP:
            name = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP"}.get(proto, str(proto))
            raise NotMptcp(f"{what}: not an MPTCP socket (protocol {name}): opened without "
                           "IPPROTO_MPTCP (262), or accepted by an MPTCP listener from a "
                           "client that does not speak MPTCP")
        raise Fallback(what)
    if err == errno.ENOPROTOOPT:
        raise MissingTool(f"{what}: this kernel does not know the option (ENOPROTOOPT)")
    raise SockoptError(f"getsockopt {what}: {os.strerror(err)}")


def _get(sock: Sock, name: int, buf: ctypes.Array[Any]) -> int:
    rc = _raw_getsockopt(_fd(sock), SOL_MPTCP, name, buf)
    if rc < 0:
        _raise(-rc, OPTION_NAMES[name], sock)
    return rc


def mptcp_info(sock: Sock) -> MptcpInfo:
    """MPTCP_INFO: the connection-level view (token, sequence numbers, PM counters, bytes)."""
    buf = ctypes.create_string_buffer(_OFFER)
    n = _get(sock, MPTCP_INFO, buf)
    return MptcpInfo.from_bytes(buf.raw[:n])


def mptcp_info_or_none(sock: Sock) -> MptcpInfo | None:
    """MPTCP_INFO, or None when the connection is plain TCP: fallen back, or accepted by an
    MPTCP listener from a client that does not speak MPTCP."""
    try:
        return mptcp_info(sock)
    except (Fallback, NotMptcp):
        return None


def _subflow_array(sock: Sock, name: int, want: int) -> tuple[list[bytes], int, int]:
    """MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS: struct mptcp_subflow_data then one element per
    subflow. Returns (elements, kernel's count, kernel's element size); grows the buffer when
    the connection has more subflows than it had room for."""
    room = _FIRST_ROOM
    for _ in range(4):
        buf = ctypes.create_string_buffer(_SUBFLOW_DATA.size + room * want)
        _SUBFLOW_DATA.pack_into(buf, 0, _SUBFLOW_DATA.size, 0, 0, want)
        n = _get(sock, name, buf)
        hdr_len, count, size_kernel, size_user = _SUBFLOW_DATA.unpack_from(buf.raw)
        got = (n - hdr_len) // size_user if size_user else 0
        if got >= count or got < room:
            break
        room = count + 4
    raw = buf.raw
    items = [raw[hdr_len + i * size_user:hdr_len + (i + 1) * size_user] for i in range(got)]
    return items, count, size_kernel


def tcp_infos(sock: Sock) -> list[TcpInfo]:
    """MPTCP_TCPINFO: struct tcp_info of every subflow, in the kernel's subflow order."""
    items, _, _ = _subflow_array(sock, MPTCP_TCPINFO, _OFFER)
    return [TcpInfo.from_bytes(b) for b in items]


def subflow_addrs(sock: Sock) -> list[SubflowAddrs]:
    """MPTCP_SUBFLOW_ADDRS: each subflow's local and remote address and port."""
    items, _, _ = _subflow_array(sock, MPTCP_SUBFLOW_ADDRS, 2 * _SOCKADDR_STORAGE)
    return [SubflowAddrs.from_bytes(b) for b in items]


_SFINFO_OFFER = 8 + 2 * _SOCKADDR_STORAGE     # id, padding to 8, struct mptcp_subflow_addrs


def full_info(sock: Sock, *, with_tcp_info: bool = True) -> FullInfo:
    """MPTCP_FULL_INFO: subflow ids, addresses, tcp_info (unless `with_tcp_info=False`) and
    mptcp_info, taken together under the connection's lock."""
    tcp_offer = _OFFER if with_tcp_info else 0
    room = _FIRST_ROOM
    for _ in range(4):
        sf = ctypes.create_string_buffer(room * _SFINFO_OFFER)
        ti = ctypes.create_string_buffer(max(1, room * tcp_offer))
        buf = ctypes.create_string_buffer(_FULL_INFO_HDR.size + _OFFER)
        _FULL_INFO_HDR.pack_into(buf, 0, 0, tcp_offer, 0, _SFINFO_OFFER, 0, room,
                                 ctypes.addressof(sf), ctypes.addressof(ti))
        n = _get(sock, MPTCP_FULL_INFO, buf)
        (size_ti_kernel, size_ti_user, size_sf_kernel, size_sf_user, count, _room,
         _, _) = _FULL_INFO_HDR.unpack_from(buf.raw)
        if count <= room:
            break
        room = count + 4
    got = min(count, room)
    tail = buf.raw[_FULL_INFO_HDR.size:n]
    info = MptcpInfo.from_bytes(tail) if tail else None
    sf_raw, ti_raw = sf.raw, ti.raw
    subflows = []
    for i in range(got):
        entry = sf_raw[i * size_sf_user:(i + 1) * size_sf_user]
        (sub_id,) = struct.unpack_from("=I", entry)
        addrs = SubflowAddrs.from_bytes(entry[8:])
        tcp = TcpInfo.from_bytes(ti_raw[i * size_ti_user:(i + 1) * size_ti_user]) \
            if size_ti_user else None
        subflows.append(Subflow(sub_id, addrs.local, addrs.remote, tcp))
    return FullInfo(info, subflows, count, size_ti_kernel, size_sf_kernel)


def tcp_info(sock: Sock) -> TcpInfo:
    """TCP_INFO (level SOL_TCP): a plain TCP socket's, or on an MPTCP socket the first
    subflow's (and the only one's after a fallback)."""
    buf = ctypes.create_string_buffer(_OFFER)
    n = _raw_getsockopt(_fd(sock), socket.IPPROTO_TCP, socket.TCP_INFO, buf)
    if n < 0:
        _raise(-n, "TCP_INFO", sock)
    return TcpInfo.from_bytes(buf.raw[:n])


def is_fallback(sock: Sock) -> bool:
    """True when the connection is plain TCP: an MPTCP socket that fell back (the kernel then
    answers MPTCP_INFO with EOPNOTSUPP), or the TCP socket an MPTCP listener's accept() hands
    out for a client that did not offer MPTCP."""
    return mptcp_info_or_none(sock) is None
