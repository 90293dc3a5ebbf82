"""Taking paths and connections down: REMOVE_ADDR and MP_FASTCLOSE between two kernels."""

from __future__ import annotations

import socket
import struct

import pytest
from support import covers, expect_counters, needs, wait_counter, wait_for

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
@covers("3.4-remove-addr")
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
@covers("3.4-remove-addr")
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
@covers("3.5-fastclose-send", "3.5-fastclose", "3.6-tcprst-reason")
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
            # The wire below is the test; the counters are only read for sense: Linux 6.18
            # counts each subflow's MP_FASTCLOSE/MP_TCPRST; 6.12 was seen counting 1 with
            # two subflows, and in such a run the wire showed MP_FASTCLOSE on one subflow
            # only, which the check below fails.
            sent = server.counters() - before["server"]
            got = client.counters() - before["client"]
            counted = {"server FastcloseTx": sent["MPTcpExtMPFastcloseTx"],
                       "server RstTx": sent["MPTcpExtMPRstTx"],
                       "client FastcloseRx": got["MPTcpExtMPFastcloseRx"],
                       "client RstRx": got["MPTcpExtMPRstRx"]}
            case.note("counted", str(counted))
            assert all(n in (1, paths) for n in counted.values()), counted
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


@needs("MPTcpExtMPJoinAckRx")
@covers("3.3-subflow-fin", "3.3-data-fin")
def test_subflows_close_with_fin_after_the_data_fin_is_acknowledged(case):
    """Two subflows, both sides close after the data: each side's DATA_FIN is acknowledged
    with a Data ACK one past it, and every subflow is then closed with a FIN in both
    directions, none of a side's subflow FINs before the other side acknowledged its
    DATA_FIN. RFC 8684 §3.3.3."""
    data = pattern(200_000)
    with Lab(two_paths_v4()) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = lab["server"].counters()
        with connect(client, server, "10.0.1.2") as conn:
            wait_counter(server, before, "MPTcpExtMPJoinAckRx")
            assert conn.upload(data) == data and conn.download(data) == data
            conn.client.shutdown(socket.SHUT_WR)
            assert conn.server.recv(10) == b""
            conn.server.shutdown(socket.SHUT_WR)
            assert conn.client.recv(10) == b""
            conn.client.close()
            conn.server.close()
            wait_for(lambda: sum("F" in s.tcp_flags for s in cap.read()) >= 4,
                     what="a FIN each way on both subflows")
        segs = cap.segments()
    subflow_keys = {frozenset([(s.src, s.sport), (s.dst, s.dport)]) for s in segs
                    if s.tcp_flags == "S"}
    assert len(subflow_keys) == 2
    for side in ("10.0.1.1", "10.0.1.2"):
        mine = [s for s in segs if s.src == side or (side == "10.0.1.1" and s.src == "10.0.2.1")
                or (side == "10.0.1.2" and s.src == "10.0.2.2")]
        fin_dsns = [o["dsn"] + o["data_level_len"] for s, o in find_options(mine, "DSS")
                    if o["data_fin"] and o["dsn_len"] == 8]
        assert fin_dsns, f"no DATA_FIN from {side}"
        want = max(fin_dsns)
        acked = [i for i, s in enumerate(segs) if s not in mine and any(
            o["subtype"] == "DSS" and o.get("data_ack") in (want, want & 0xFFFFFFFF)
            for o in s.options)]
        assert acked, f"the DATA_FIN of {side} was never acknowledged"
        fins = [i for i, s in enumerate(segs) if s in mine and "F" in s.tcp_flags]
        assert len(fins) == 2, f"{side} closed {len(fins)} subflows with a FIN, not 2"
        assert min(fins) > acked[0], (side, fins, acked[0])


@needs("MPTcpExtMPJoinAckRx", "MPTcpExtMPPrioTx")
@covers("3-reserved-send", "3.1-b-flag-send")
def test_every_option_the_kernels_send_has_its_reserved_bits_zero(case):
    """A connection that uses most subtypes (MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR, MP_PRIO,
    REMOVE_ADDR, then MP_FASTCLOSE with MP_TCPRST): in every option either kernel sends,
    the reserved and unassigned bits (B and D-G of MP_CAPABLE, U/V/W of MP_TCPRST, ...) are
    zero. RFC 8684 §3."""
    from mptcplab.facts import reserved_bits

    with Lab(two_paths_v4()) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        (ep,) = server.pm.endpoint("show")
        before = lab["server"].counters()
        with connect(client, server, "10.0.1.2") as conn:
            wait_counter(server, before, "MPTcpExtMPJoinAckRx")
            assert conn.upload(pattern(50_000)) == pattern(50_000)
            server.pm.endpoint("set", id=ep["id"], flags=["backup"])
            wait_counter(server, before, "MPTcpExtMPPrioTx")
            server.pm.endpoint("del", id=ep["id"])
            wait_counter(server, before, "MPTcpExtRmAddrTx")
            close_linger0(conn.server)
            wait_counter(server, before, "MPTcpExtMPFastcloseTx")
        segs = cap.segments()
    seen = {o["subtype"] for s in segs for o in s.options}
    assert {"MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR", "MP_PRIO", "REMOVE_ADDR",
            "MP_FASTCLOSE", "MP_TCPRST"} <= seen, seen
    assert reserved_bits(str(cap.path)) == []
