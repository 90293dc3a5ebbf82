"""The raw MPTCP endpoint: a peer that builds every segment itself, to face the kernel with
what a kernel never sends.

    segment.py    one IPv4/IPv6 TCP segment with struct (build_segment)
    endpoint.py   MptcpPeer: handshakes as initiator and listener (every option overridable),
                  data with DSS mappings (64- or 32-bit), acks, signals, expect()
    rst.py        kernel_rsts_dropped(host, port): for Scapy flows of your own (docs/peer.md)

    from mptcplab.peer import MptcpPeer
"""

from mptcplab.peer.endpoint import (
    DEFAULT,
    ExpectationFailed,
    Listener,
    MptcpPeer,
    Subflow,
)
from mptcplab.peer.rst import kernel_rsts_dropped
from mptcplab.peer.segment import ACK, FIN, PSH, RST, SYN, build_segment

__all__ = [
    "ACK", "DEFAULT", "FIN", "PSH", "RST", "SYN", "ExpectationFailed", "Listener", "MptcpPeer",
    "Subflow", "build_segment", "kernel_rsts_dropped",
]
