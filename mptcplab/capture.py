"""Reading capture files: pcap (micro- and nanosecond) and pcapng, record by record.

The reader is plain ``struct`` work, with no Scapy object per record, so fast decoders can use it
as well as the layers. It checks what Scapy's readers let pass: a file that is not a capture, and
a last record cut short, are ``BadInput`` errors with a one-line reason — raised only after every
complete record before the damage has been yielded, so nothing decodable is lost.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mptcplab.errors import BadInput

# Link types this lab decodes (tcpdump's LINKTYPE_* numbers).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A


@dataclass(slots=True)
class Record:
    """One captured frame: its 1-based index in the file, time, link type and bytes."""

    index: int
    time: float
    linktype: int
    data: bytes
    wire_len: int


class TruncatedCapture(BadInput):
    """The capture ends in the middle of a record (the records before it were delivered)."""


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record of a pcap or pcapng file, in order."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) < 4:
        raise BadInput(f"{path}: not a capture file ({len(data)} bytes)")
    if data[:4] in _PCAP_MAGICS:
        yield from _pcap_records(path, data)
    elif struct.unpack("<I", data[:4])[0] == _PCAPNG_SHB:
        yield from _pcapng_records(path, data)
    else:
        raise BadInput(f"{path}: not a pcap or pcapng file (starts with {data[:4].hex()})")


def _pcap_records(path: str | Path, data: bytes) -> Iterator[Record]:
    endian, resolution = _PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise TruncatedCapture(f"{path}: pcap header cut short ({len(data)} of 24 bytes)")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    offset, index, size = 24, 0, len(data)
    while offset < size:
        if offset + 16 > size:
            raise TruncatedCapture(
                f"{path}: record {index + 1} is cut short (header: {size - offset} of 16 bytes); "
                f"the {index} records before it were read")
        sec, frac, caplen, wirelen = record.unpack_from(data, offset)
        offset += 16
        if offset + caplen > size:
            raise TruncatedCapture(
                f"{path}: record {index + 1} is cut short ({size - offset} of {caplen} bytes); "
                f"the {index} records before it were read")
        index += 1
        yield Record(index, sec + frac * resolution, linktype, data[offset:offset + caplen],
                     wirelen)
        offset += caplen


def _pcapng_records(path: str | Path, data: bytes) -> Iterator[Record]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []   # (linktype, seconds per tick)
    offset, index, size = 0, 0, len(data)
    while offset < size:
        if offset + 12 > size:
            raise TruncatedCapture(f"{path}: block at byte {offset} is cut short; "
                                   f"the {index} records before it were read")
        btype = struct.unpack_from(endian + "I", data, offset)[0]
        if btype == _PCAPNG_SHB:
            magic = data[offset + 8:offset + 12]
            endian = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        blen = struct.unpack_from(endian + "I", data, offset + 4)[0]
        if blen < 12 or blen % 4:
            raise BadInput(f"{path}: block at byte {offset} has an impossible length {blen}")
        if offset + blen > size:
            raise TruncatedCapture(f"{path}: block at byte {offset} is cut short "
                                   f"({size - offset} of {blen} bytes); the {index} records "
                                   "before it were read")
        body = data[offset + 8:offset + blen - 4]
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _tsresol(body[8:], endian)))
        elif btype == 6:  # Enhanced Packet Block
            iface, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body, 0)
            if iface >= len(interfaces):
                raise BadInput(f"{path}: packet block names interface {iface}, never described")
            linktype, tick = interfaces[iface]
            index += 1
            yield Record(index, ((ts_hi << 32) | ts_lo) * tick, linktype,
                         bytes(body[20:20 + caplen]), wirelen)
        elif btype == 3:  # Simple Packet Block
            if not interfaces:
                raise BadInput(f"{path}: packet block before any interface description")
            wirelen = struct.unpack_from(endian + "I", body, 0)[0]
            index += 1
            yield Record(index, 0.0, interfaces[0][0], bytes(body[4:4 + wirelen]), wirelen)
        offset += blen


def _tsresol(options: bytes, endian: str) -> float:
    """Seconds per timestamp tick from an IDB's if_tsresol option (default microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        pos += 4 + length + (-length % 4)
    return 1e-6


def scapy_packet(record: Record):  # -> scapy.packet.Packet
    """The record as a Scapy packet of its link type (raw bytes if the type is unknown)."""
    from scapy.config import conf
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
    from scapy.layers.ppp import PPP
    from scapy.packet import Raw

    known = {LINKTYPE_NULL: Loopback, LINKTYPE_ETHERNET: Ether, LINKTYPE_PPP: PPP,
             LINKTYPE_LINUX_SLL: CookedLinux, LINKTYPE_LINUX_SLL2: CookedLinuxV2}
    cls = known.get(record.linktype) or conf.l2types.get(record.linktype)
    if cls is None and record.linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        cls = IPv6 if record.data[:1] and record.data[0] >> 4 == 6 else IP
    pkt = (cls or Raw)(record.data)
    pkt.time = record.time
    return pkt
