"""TCP Fast Open with MPTCP between two kernels (RFC 8684 Appendix B; packetdrill's
gtests/net/mptcp/fastopen): the first connection fetches a cookie, the second carries data in
its MP_CAPABLE SYN."""

from __future__ import annotations

import errno
import socket

from support import covers, expect_counters, needs, unavailable

from mptcplab.facts import has
from mptcplab.topo import IPPROTO_MPTCP, Lab, catalogue

MSG_FASTOPEN = 0x20000000
TCP_FASTOPEN = 23
SERVER = "10.0.2.1"

pytestmark = needs("tcpdump", "net.ipv4.tcp_fastopen", "TcpExtTCPFastOpenActive",
                   "TcpExtTCPFastOpenPassive")


def _fastopen_once(client, server_sock, data: bytes) -> bytes:
    """One client connection sending `data` with MSG_FASTOPEN; what the server read."""
    sock = client.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    try:
        sock.sendto(data, MSG_FASTOPEN, (SERVER, 5000))    # blocking: a timeout would
        sock.settimeout(5)                                 # make it EINPROGRESS
        conn, _ = server_sock.accept()
        conn.settimeout(5)
        got = b""
        while len(got) < len(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        conn.close()
        return got
    finally:
        sock.close()


@covers("3.1-tfo", "3.1-syn-form")
def test_fast_open_data_rides_in_the_mp_capable_syn(case):
    """Both hosts allow TCP Fast Open (tcp_fastopen=3, the listener with TCP_FASTOPEN): the
    first connection's SYN fetches a cookie and carries no data; the second's SYN carries
    MP_CAPABLE and the data, the server's application reads it, and the connection is MPTCP
    (the listener counts an MP_CAPABLE SYN and a Fast Open). RFC 8684 Appendix B, §3.1."""
    topo = catalogue.get("client-router-server")
    for name in ("client", "server"):
        topo.nodes[name].sysctls["net.ipv4.tcp_fastopen"] = "3"
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "eth0", filter="tcp port 5000", snaplen=65600)
        lst = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            lst.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 8)
        except OSError as exc:              # Linux 6.1: MPTCP sockets refuse the option
            if exc.errno not in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                raise
            unavailable(f"this kernel's MPTCP sockets do not take TCP_FASTOPEN "
                        f"({errno.errorcode[exc.errno]})")
        lst.bind(("0.0.0.0", 5000))
        lst.listen(8)
        lst.settimeout(5)
        before = {n: lab[n].counters() for n in ("client", "server")}
        assert _fastopen_once(client, lst, b"cookie please") == b"cookie please"
        assert _fastopen_once(client, lst, b"data in the SYN") == b"data in the SYN"
        lst.close()
        expect_counters(client, before["client"], TcpExtTCPFastOpenActive=1)
        expect_counters(server, before["server"], TcpExtTCPFastOpenPassive=1,
                        MPTcpExtMPCapableSYNRX=2)
        segs = cap.segments()
    syns = [s for s in segs if s.tcp_flags == "S"]
    assert len(syns) == 2 and all(has(s, "MP_CAPABLE") for s in syns)
    assert [s.payload_len for s in syns] == [0, len(b"data in the SYN")]
    assert syns[1].payload == b"data in the SYN"
    synacks = [s for s in segs if s.tcp_flags == "SA"]
    assert all(has(s, "MP_CAPABLE") for s in synacks)
    assert synacks[1].ack == (syns[1].seq + 1 + len(b"data in the SYN")) % 2**32
