"""Building one IPv4/IPv6 TCP segment with ``struct``: the peer's wire format.

No Scapy object per packet (a persistent raw socket sends these in ~0.1 ms); the tests hold the
result to Scapy's own checksums.
"""

from __future__ import annotations

import socket
import struct

from mptcplab import crypto

U32 = (1 << 32) - 1
WINDOW = 65535

# TCP flag bits
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def build_segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
                  options: bytes = b"", payload: bytes = b"", window: int = WINDOW) -> bytes:
    """An IPv4 or IPv6 packet carrying one TCP segment, checksums filled in (options padded
    to a multiple of 4 bytes with zeros)."""
    options += b"\0" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & U32, ack & U32, doff << 4, flags,
                      window, 0, 0) + options + payload
    if ":" in src:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s + d + struct.pack("!IxxxB", len(tcp), 6)
        tcp = tcp[:16] + struct.pack("!H", crypto.internet_checksum(pseudo + tcp)) + tcp[18:]
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + s + d + tcp
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!xBH", 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", crypto.internet_checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0) + s + d
    header = header[:10] + struct.pack("!H", crypto.internet_checksum(header)) + header[12:]
    return header + tcp
