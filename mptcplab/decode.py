"""Decoding captured frames into MPTCP segments.

``segment_from_scapy`` is the reference path: Scapy dissects the frame and the MPTCP layers
decode the options. Faster decoders must produce the same ``Segment`` values; the tests hold
them to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from mptcplab.capture import read_records, scapy_packet
from mptcplab.layers import mptcp_options


@dataclass(slots=True)
class Segment:
    """One TCP segment and the MPTCP options it carries (as ``as_dict()`` gives them)."""

    frame: int
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    tcp_flags: str
    seq: int
    ack: int
    payload_len: int
    options: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"type": "packet", "frame": self.frame, "time": round(self.time, 6),
                "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport,
                "tcp_flags": self.tcp_flags, "seq": self.seq, "ack": self.ack,
                "payload_len": self.payload_len, "options": self.options}


def segment_from_scapy(pkt: Any, frame: int) -> Segment | None:
    """The TCP segment in a Scapy packet, or None when it holds no TCP."""
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
                   options=[opt.as_dict() for opt in mptcp_options(tcp)])


def decode_file(path: str, *, mptcp_only: bool = True) -> Iterator[Segment]:
    """The TCP segments of a capture file, decoded by Scapy and the MPTCP layers.

    Raises ``BadInput`` (``TruncatedCapture`` for a cut-short last record) after yielding
    everything decodable before the problem.
    """
    for record in read_records(path):
        seg = segment_from_scapy(scapy_packet(record), record.index)
        if seg is not None and (seg.options or not mptcp_only):
            yield seg
