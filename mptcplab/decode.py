"""Decoding captured frames into MPTCP segments, two ways that must agree.

* The reference path, ``segment_from_scapy``: Scapy dissects the frame, the MPTCP layers decode
  the options (``as_dict()``).
* The fast path, ``segment_from_frame`` / ``decode_option``: ``struct`` on the frame's bytes,
  no Scapy object per packet. It shares the layers' shape check (``malformed_reason``) and must
  produce exactly the dictionaries ``as_dict()`` produces; the tests hold it to that on every
  capture and on random bytes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from mptcplab.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_PPP,
    LINKTYPE_RAW,
    read_records,
    scapy_packet,
)
from mptcplab.wire import (
    CAPABLE_FLAGS,
    DSS_FLAGS,
    MPTCP_KIND,
    SUBTYPE_NAMES,
    TCPRST_FLAGS,
    TCPRST_REASONS,
    flag_letters,
    malformed_reason,
    option_spans,
)


class Segment:
    """One TCP segment and the MPTCP options it carries (as ``as_dict()`` gives them).

    A plain class rather than a dataclass: the sniffer starts without importing dataclasses
    (and the inspect module it brings)."""

    __slots__ = ("ack", "dport", "dst", "frame", "options", "payload", "payload_len", "seq",
                 "sport", "src", "tcp_flags", "time")
    FIELDS = ("frame", "time", "src", "sport", "dst", "dport", "tcp_flags", "seq", "ack",
              "payload_len", "options", "payload")

    def __init__(self, frame: int, time: float, src: str, sport: int, dst: str, dport: int,
                 tcp_flags: str, seq: int, ack: int, payload_len: int,
                 options: list[dict[str, Any]] | None = None, payload: bytes = b"") -> None:
        self.frame, self.time = frame, time
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.tcp_flags, self.seq, self.ack, self.payload_len = tcp_flags, seq, ack, payload_len
        self.options: list[dict[str, Any]] = [] if options is None else options
        self.payload = payload        # the captured part of the payload (may be cut by snaplen)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Segment:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None     # type: ignore[assignment]   # mutable, compared by value

    def __repr__(self) -> str:
        return "Segment(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS) + ")"

    def as_dict(self) -> dict[str, Any]:
        return {"type": "packet", "frame": self.frame, "time": round(self.time, 6),
                "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport,
                "tcp_flags": self.tcp_flags, "seq": self.seq, "ack": self.ack,
                "payload_len": self.payload_len, "options": self.options}


# ---------------------------------------------------------------------------------------------
# The reference path: Scapy


def segment_from_scapy(pkt: Any, frame: int) -> Segment | None:
    """The TCP segment in a Scapy packet, or None when it holds no TCP."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    from mptcplab.layers import mptcp_options

    tcp = pkt.getlayer(TCP)
    if tcp is None:
        return None
    ip = tcp.underlayer
    if not isinstance(ip, (IP, IPv6)):
        return None
    if isinstance(ip, IP):
        ip_payload = max(0, ip.len - ip.ihl * 4) if ip.len is not None else len(ip.payload)
    else:
        ip_payload = ip.plen if ip.plen is not None else len(ip.payload)
    payload_len = max(0, ip_payload - tcp.dataofs * 4)
    return Segment(frame=frame, time=float(pkt.time), src=ip.src, sport=tcp.sport, dst=ip.dst,
                   dport=tcp.dport, tcp_flags=str(tcp.flags), seq=tcp.seq, ack=tcp.ack,
                   payload_len=payload_len,
                   options=[opt.as_dict() for opt in mptcp_options(tcp)],
                   payload=bytes(tcp.payload)[:payload_len])


# ---------------------------------------------------------------------------------------------
# The fast path: struct


_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_CAPABLE_LETTERS = [flag_letters(v, CAPABLE_FLAGS) for v in range(256)]
_DSS_LETTERS = [flag_letters(v, DSS_FLAGS) for v in range(32)]
_TCPRST_LETTERS = [flag_letters(v, TCPRST_FLAGS) for v in range(16)]
# Scapy's TCP flag letters, least significant first, as str(TCP.flags) prints them.
_TCP_LETTERS = ["".join(c for bit, c in enumerate("FSRPAUECN") if v >> bit & 1)
                for v in range(512)]


def _capable(raw: bytes, length: int) -> dict[str, Any]:
    d: dict[str, Any] = {"subtype": "MP_CAPABLE", "length": length, "version": raw[2] & 0x0F,
                         "flags": _CAPABLE_LETTERS[raw[3]]}
    if length >= 12:
        d["sender_key"] = _U64(raw, 4)[0]
    if length >= 20:
        d["receiver_key"] = _U64(raw, 12)[0]
    if length >= 22:
        d["data_level_len"] = _U16(raw, 20)[0]
    if length >= 24:
        d["checksum"] = _U16(raw, 22)[0]
    return d


def _join(raw: bytes, length: int) -> dict[str, Any]:
    if length == 24:
        return {"subtype": "MP_JOIN", "length": 24, "hmac": raw[4:24].hex()}
    d: dict[str, Any] = {"subtype": "MP_JOIN", "length": length, "backup": bool(raw[2] & 1),
                         "addr_id": raw[3]}
    if length == 12:
        d["token"] = _U32(raw, 4)[0]
        d["nonce"] = _U32(raw, 8)[0]
    else:
        d["truncated_hmac"] = _U64(raw, 4)[0]
        d["nonce"] = _U32(raw, 12)[0]
    return d


def _dss(raw: bytes, length: int) -> dict[str, Any]:
    flags = raw[3] & 0x1F
    d: dict[str, Any] = {"subtype": "DSS", "length": length, "flags": _DSS_LETTERS[flags]}
    pos = 4
    if flags & 0x01:
        if flags & 0x02:
            d["data_ack"], d["data_ack_len"] = _U64(raw, pos)[0], 8
            pos += 8
        else:
            d["data_ack"], d["data_ack_len"] = _U32(raw, pos)[0], 4
            pos += 4
    if flags & 0x04:
        if flags & 0x08:
            d["dsn"], d["dsn_len"] = _U64(raw, pos)[0], 8
            pos += 8
        else:
            d["dsn"], d["dsn_len"] = _U32(raw, pos)[0], 4
            pos += 4
        d["ssn"] = _U32(raw, pos)[0]
        d["data_level_len"] = _U16(raw, pos + 4)[0]
        if length == pos + 8:
            d["checksum"] = _U16(raw, pos + 6)[0]
    d["data_fin"] = bool(flags & 0x10)
    return d


def _add_addr(raw: bytes, length: int) -> dict[str, Any]:
    nibble = raw[2] & 0x0F
    v0 = nibble in (4, 6)
    v6 = length >= 20
    addr = socket.inet_ntop(socket.AF_INET6, raw[4:20]) if v6 else \
        socket.inet_ntop(socket.AF_INET, raw[4:8])
    end = 20 if v6 else 8
    port = _U16(raw, end)[0] if length in (10, 18, 22, 30) else None
    if v0:
        return {"subtype": "ADD_ADDR", "length": length, "version": 0, "ipver": nibble,
                "echo": False, "addr_id": raw[3], "addr": addr, "port": port, "hmac": None}
    echo = bool(nibble & 1)
    return {"subtype": "ADD_ADDR", "length": length, "version": 1, "echo": echo,
            "addr_id": raw[3], "addr": addr, "port": port,
            "hmac": None if echo else _U64(raw, length - 8)[0]}


def _tcprst(raw: bytes, length: int) -> dict[str, Any]:
    reason = raw[3]
    return {"subtype": "MP_TCPRST", "length": length, "flags": _TCPRST_LETTERS[raw[2] & 0x0F],
            "reason": reason,
            "reason_name": TCPRST_REASONS.get(reason, f"unknown reason {reason:#04x}")}


_DECODERS: dict[int, Callable[[bytes, int], dict[str, Any]]] = {
    0x0: _capable,
    0x1: _join,
    0x2: _dss,
    0x3: _add_addr,
    0x4: lambda raw, n: {"subtype": "REMOVE_ADDR", "length": n, "addr_ids": list(raw[3:n])},
    0x5: lambda raw, n: {"subtype": "MP_PRIO", "length": n, "backup": bool(raw[2] & 1),
                         "addr_id": raw[3] if n == 4 else None},
    0x6: lambda raw, n: {"subtype": "MP_FAIL", "length": n, "dsn": _U64(raw, 4)[0]},
    0x7: lambda raw, n: {"subtype": "MP_FASTCLOSE", "length": n,
                         "receiver_key": _U64(raw, 4)[0]},
    0x8: _tcprst,
    0xF: lambda raw, n: {"subtype": "MP_EXPERIMENTAL", "length": n, "nibble": raw[2] & 0x0F,
                         "data": raw[3:n].hex()},
}


def _unknown(raw: bytes, length: int) -> dict[str, Any]:
    return {"subtype": "UNKNOWN", "length": length, "subtype_id": raw[2] >> 4,
            "raw": raw[:length].hex()}


def decode_option(raw: bytes) -> dict[str, Any]:
    """An MPTCP option's fields, exactly as ``MPTCPOption(raw).as_dict()`` gives them."""
    reason = malformed_reason(raw)
    if reason is not None:
        return {"subtype": SUBTYPE_NAMES.get(raw[2] >> 4, "UNKNOWN") if len(raw) >= 3
                else "UNKNOWN", "length": raw[1] if len(raw) > 1 else len(raw),
                "malformed": True, "raw": raw.hex(), "reason": reason}
    length = raw[1]
    return _DECODERS.get(raw[2] >> 4, _unknown)(raw, length)


def decode_options(opts: bytes) -> list[dict[str, Any]]:
    """Every MPTCP option in a TCP options area, decoded."""
    return [decode_option(span) for span in option_spans(opts) if span[0] == MPTCP_KIND]


def _ip_offset(data: bytes, linktype: int) -> int:
    """Where the IP header starts in a frame of this link type, or -1."""
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 14, _U16(data, 12)[0] if len(data) >= 14 else 0
        while ethertype in (0x8100, 0x88A8) and len(data) >= offset + 4:   # VLAN tags
            ethertype = _U16(data, offset + 2)[0]
            offset += 4
        return offset if ethertype in (0x0800, 0x86DD) else -1
    if linktype == LINKTYPE_LINUX_SLL:
        return 16 if len(data) >= 16 and _U16(data, 14)[0] in (0x0800, 0x86DD) else -1
    if linktype == LINKTYPE_LINUX_SLL2:
        return 20 if len(data) >= 20 and _U16(data, 0)[0] in (0x0800, 0x86DD) else -1
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return 0
    if linktype == LINKTYPE_NULL:
        return 4
    if linktype == LINKTYPE_PPP:
        offset = 4 if data[:2] == b"\xff\x03" else 2
        return offset if len(data) >= offset and \
            _U16(data, offset - 2)[0] in (0x0021, 0x0057) else -1
    return -1


# Public names for the sniffer's fast path, which reads the same headers the same way.
TCP_FLAG_LETTERS = _TCP_LETTERS
ip_offset = _ip_offset

_IPV6_EXTENSIONS = (0, 43, 60)   # hop-by-hop, routing, destination options


def segment_from_frame(data: bytes, linktype: int, frame: int, time: float) -> Segment | None:
    """The TCP segment in a captured frame, decoded with struct; None if it holds no TCP."""
    ip = _ip_offset(data, linktype)
    if ip < 0 or len(data) < ip + 20:
        return None
    version = data[ip] >> 4
    if version == 4:
        ihl = (data[ip] & 0x0F) * 4
        if data[ip + 9] != 6 or _U16(data, ip + 6)[0] & 0x1FFF:   # not TCP, or a fragment
            return None
        ip_payload = _U16(data, ip + 2)[0] - ihl
        src = socket.inet_ntop(socket.AF_INET, data[ip + 12:ip + 16])
        dst = socket.inet_ntop(socket.AF_INET, data[ip + 16:ip + 20])
        tcp = ip + ihl
    elif version == 6:
        if len(data) < ip + 40:
            return None
        nxt, ip_payload, tcp = data[ip + 6], _U16(data, ip + 4)[0], ip + 40
        while nxt in _IPV6_EXTENSIONS and len(data) >= tcp + 8:
            nxt, ext_len = data[tcp], (data[tcp + 1] + 1) * 8
            ip_payload -= ext_len
            tcp += ext_len
        if nxt != 6:
            return None
        src = socket.inet_ntop(socket.AF_INET6, data[ip + 8:ip + 24])
        dst = socket.inet_ntop(socket.AF_INET6, data[ip + 24:ip + 40])
    else:
        return None
    if len(data) < tcp + 20:
        return None
    sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", data, tcp)
    doff = (off_flags >> 12) * 4
    options = decode_options(data[tcp + 20:tcp + doff]) if doff > 20 else []
    payload_len = max(0, ip_payload - doff)
    return Segment(frame, time, src, sport, dst, dport, _TCP_LETTERS[off_flags & 0x1FF], seq, ack,
                   payload_len, options, data[tcp + doff:tcp + doff + payload_len])


def decode_file(path: str, *, mptcp_only: bool = True, fast: bool = True) -> Iterator[Segment]:
    """The TCP segments of a capture file (fast path, or Scapy's with ``fast=False``).

    Raises ``BadInput`` (``TruncatedCapture`` for a cut-short last record) after yielding
    everything decodable before the problem.
    """
    for record in read_records(path):
        if fast:
            seg = segment_from_frame(record.data, record.linktype, record.index, record.time)
        else:
            seg = segment_from_scapy(scapy_packet(record), record.index)
        if seg is not None and (seg.options or not mptcp_only):
            yield seg
