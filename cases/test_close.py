"""Taking paths and connections down: REMOVE_ADDR and MP_FASTCLOSE between two kernels."""

from __future__ import annotations

import socket
import struct

import pytest
from support import expect_counters, needs, wait_counter, wait_for

from mptcplab.facts import find_options, has, mptcp_keys, payload_bytes
from mptcplab.topo import Lab, catalogue
from mptcplab.traffic import connect, pattern

pytestmark = needs("tcpdump")


def two_paths_v4():
    """two-paths with one announced address, 10.0.2.2."""
    topo = catalogue.get("two-paths", rate=None)
    server = topo.nodes["server"]
    server.endpoints = [ep for ep in server.endpoints if ep.addr.version == 4]
    return topo


def subflows(host, peer: str) -> list[str]:
    """Established TCP connections of `host` towards `peer` (ss)."""
    out = host.run(["ss", "-tnH", "state", "established", "dst", peer]).stdout
    return [line for line in out.splitlines() if line.strip()]


@needs("ss", "MPTcpExtRmAddr", "MPTcpExtRmSubflow")
def test_remove_addr_closes_the_subflows_on_that_address(case):
    """The server deletes its announced endpoint mid-connection: REMOVE_ADDR with that
    address id, the subflow to 10.0.2.2 closes, and the data goes on over the other path.
    RFC 8684 §3.4.2."""
    data = pattern(300_000)
    with Lab(two_paths_v4()) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        (ep,) = server.pm.endpoint("show")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2") as conn:
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert conn.upload(data) == data
            assert subflows(client, "10.0.2.2")
            server.pm.endpoint("del", id=ep["id"])
            wait_counter(client, before["client"], "MPTcpExtRmAddr")
            wait_for(lambda: not subflows(client, "10.0.2.2"), what="no subflow to 10.0.2.2")
            mark = cap.mark()
            assert conn.upload(data) == data and conn.download(data) == data
            expect_counters(client, before["client"], MPTcpExtRmAddr=1)
            expect_counters(server, before["server"], MPTcpExtRmAddrTx=1)
            segs = cap.segments()
    removes = find_options(segs, "REMOVE_ADDR")
    assert [(s.src, o["addr_ids"]) for s, o in removes] == [("10.0.1.2", [ep["id"]])]
    fins = {s.src for s in segs if "F" in s.tcp_flags and "10.0.2.2" in (s.src, s.dst)}
    assert fins == {"10.0.2.1", "10.0.2.2"}             # the subflow closed, both ways
    assert payload_bytes(segs[mark:], src="10.0.2.1") == 0
    assert payload_bytes(segs[mark:], dst="10.0.2.1") == 0


@needs("ss", "MPTcpExtRmAddr", "MPTcpExtRmSubflow")
def test_removing_own_subflow_endpoint_sends_remove_addr(case):
    """The client deletes its cellular subflow endpoint: it tells the server with REMOVE_ADDR
    (that endpoint's id) and the cellular subflow closes; WiFi carries on. RFC 8684 §3.4.2."""
    data = pattern(300_000)
    with Lab(catalogue.get("wifi-cellular", wifi_rate="100mbit", cell_rate="100mbit")) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        (ep,) = [e for e in client.pm.endpoint("show") if e["addr"] == "10.0.2.1"]
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.3.1") as conn:
            conn.upload(b"hi")      # the client's PM opens subflows once MPTCP is confirmed
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            client.pm.endpoint("del", id=ep["id"])
            wait_counter(server, before["server"], "MPTcpExtRmAddr")
            wait_for(lambda: len(subflows(client, "10.0.3.1")) == 1, what="one subflow left")
            mark = cap.mark()
            assert conn.upload(data) == data and conn.download(data) == data
            expect_counters(client, before["client"], MPTcpExtRmAddrTx=1)
            expect_counters(server, before["server"], MPTcpExtRmAddr=1)
            segs = cap.segments()
    removes = find_options(segs, "REMOVE_ADDR")
    assert {(s.src, tuple(o["addr_ids"])) for s, o in removes} == {("10.0.1.1", (ep["id"],))}
    closing = {s.src for s in segs if set("FR") & set(s.tcp_flags) and "10.0.2.1" in (s.src, s.dst)}
    assert "10.0.2.1" in closing                        # the client closed its subflow
    assert payload_bytes(segs[mark:], src="10.0.2.1") == 0
    assert payload_bytes(segs[mark:], dst="10.0.2.1") == 0


def close_unread(sock: socket.socket) -> None:
    sock.close()                 # with bytes still unread in its receive queue


def close_linger0(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@needs("MPTcpExtMPFastcloseTx", "MPTcpExtMPFastcloseRx", "MPTcpExtMPRstTx")
@pytest.mark.parametrize("how", [close_unread, close_linger0], ids=["unread-data", "linger0"])
@pytest.mark.parametrize("paths", [1, 2])
def test_fastclose_resets_every_subflow(case, how, paths):
    """The server closes abruptly (data left unread, or SO_LINGER 0): every subflow gets a
    RST carrying MP_FASTCLOSE with the client's key and MP_TCPRST, and the client's
    application sees the connection reset. RFC 8684 §3.5, §3.6."""
    topo = two_paths_v4() if paths == 2 else catalogue.get("client-router-server")
    dst = "10.0.1.2" if paths == 2 else "10.0.2.1"
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, dst) as conn:
            if paths == 2:
                wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert conn.upload(b"read") == b"read"
            if how is close_unread:
                conn.client.sendall(pattern(5_000))
                wait_for(lambda: conn.server.recv(1, socket.MSG_PEEK), what="unread data")
            how(conn.server)
            wait_counter(client, before["client"], "MPTcpExtMPFastcloseRx")
            with pytest.raises(ConnectionResetError):
                conn.client.settimeout(5)
                conn.client.recv(100)
            expect_counters(server, before["server"], MPTcpExtMPFastcloseTx=paths,
                            MPTcpExtMPRstTx=paths)
            expect_counters(client, before["client"], MPTcpExtMPFastcloseRx=paths,
                            MPTcpExtMPRstRx=paths)
            segs = cap.segments()
    client_key, _ = mptcp_keys(segs)
    fastcloses = [s for s in segs if has(s, "MP_FASTCLOSE")]
    subflow_ports = {s.sport for s in segs if s.tcp_flags == "S"}
    assert len(subflow_ports) == paths
    assert {s.dport for s in fastcloses} == subflow_ports           # one per subflow
    for seg in fastcloses:
        assert "R" in seg.tcp_flags and seg.sport == 5000
        assert has(seg, "MP_FASTCLOSE", receiver_key=client_key)
        assert has(seg, "MP_TCPRST")
