"""MPTCP socket options (level SOL_MPTCP = 284) on kernel sockets.

For now: whether a connection fell back to plain TCP. (The typed MPTCP_INFO / MPTCP_TCPINFO /
MPTCP_SUBFLOW_ADDRS / MPTCP_FULL_INFO readers grow here.)
"""

from __future__ import annotations

import errno
import socket

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1


def is_fallback(sock: socket.socket) -> bool:
    """True when the MPTCP socket fell back to TCP (MPTCP_INFO then answers EOPNOTSUPP)."""
    try:
        sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 48)
    except OSError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
        return True
    return False
