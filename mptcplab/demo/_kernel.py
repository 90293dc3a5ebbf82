"""What the kernel says about an MPTCP socket: MPTCP_INFO (getsockopt SOL_MPTCP=284,
MPTCP_INFO=1), read here with the few fields the demos compare with the capture.

The typed MPTCP_INFO reader belongs in mptcplab/sockopt.py (being grown on another branch);
when it lands, ``mptcp_info`` should become a call to it.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

SOL_MPTCP = 284
MPTCP_INFO = 1

# struct mptcp_info (include/uapi/linux/mptcp.h), the part the demos read:
#   u8 subflows, add_addr_signal, add_addr_accepted, subflows_max, add_addr_signal_max,
#      add_addr_accepted_max; (pad) u32 flags; u32 token; u64 write_seq, snd_una, rcv_nxt;
#   u8 local_addr_used, local_addr_max, csum_enabled
_HEAD = struct.Struct("=6B2xIIQQQBBB")


@dataclass(frozen=True)
class MptcpInfo:
    """The kernel's view of an MPTCP connection (one socket's side of it)."""

    subflows: int           # additional subflows (the initial one not counted)
    add_addr_signal: int
    add_addr_accepted: int
    token: int              # this end's token: SHA-256(own key), most significant 32 bits
    write_seq: int          # next data sequence number to send (IDSN + 1 + bytes sent)
    snd_una: int            # oldest data sequence number not yet acknowledged
    rcv_nxt: int            # next data sequence number expected from the peer
    csum_enabled: bool


def mptcp_info(sock: socket.socket) -> MptcpInfo | None:
    """MPTCP_INFO of a connected MPTCP socket; None once it fell back to TCP (the kernel
    answers EOPNOTSUPP)."""
    try:
        raw = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 96)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return None
        raise
    (subflows, signal, accepted, _smax, _sigmax, _accmax, _flags, token, write_seq, snd_una,
     rcv_nxt, _used, _lmax, csum) = _HEAD.unpack_from(raw.ljust(_HEAD.size, b"\0"))
    return MptcpInfo(subflows, signal, accepted, token, write_seq, snd_una, rcv_nxt,
                     bool(csum))
