"""Real kernel MPTCP traffic through lab topologies: both paths used, and what each middlebox
line does to a connection (root; middleboxes need nft)."""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import time

import pytest
from topo_fixtures import (
    mptcp_transfer,
    needs_nft,
    needs_root,
    needs_ss,
    needs_tcpdump,
    root_guard,  # noqa: F401  (module fixture)
)

from mptcplab.topo import (
    IPPROTO_MPTCP,
    SOL_MPTCP,
    CorruptPayload,
    DropMpCapableSyn,
    DropMptcpSubtype,
    Lab,
    Nat,
    StripMptcpOption,
    catalogue,
)

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]
MPTCP_INFO = 1


def is_fallback(sock: socket.socket) -> bool:
    """MPTCP_INFO answers only while the connection still speaks MPTCP."""
    try:
        sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 48)
    except OSError as exc:
        assert exc.errno == errno.EOPNOTSUPP
        return True
    return False


def tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """RFC 793 checksum of an IPv4 TCP segment, its own checksum field taken as zero."""
    data = src + dst + bytes([0, socket.IPPROTO_TCP]) + len(segment).to_bytes(2, "big") \
        + segment[:16] + b"\0\0" + segment[18:]
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tx_bytes(lab: Lab, node: str) -> dict[str, int]:
    return {ln.get_attr("IFLA_IFNAME"): ln.get_attr("IFLA_STATS64")["tx_bytes"]
            for ln in lab[node].ipr.get_links()}


@needs_ss
@pytest.mark.parametrize("family", [4, 6])
def test_two_paths_transfer_uses_both_paths(family):
    """A kernel MPTCP upload over two-paths: the server's ADD_ADDR brings a second subflow
    over eth1, and the MIB counters, `ss -M` and the interface byte counters agree."""
    with Lab(catalogue.get("two-paths")) as lab:
        client, server = lab["client"], lab["server"]
        before = {n: lab[n].counters() for n in ("client", "server")}
        tx0 = tx_bytes(lab, "client")
        seen: dict[str, str] = {}

        def look() -> None:
            seen["ss_M"] = client.run(["ss", "-MHni"]).stdout
            seen["ss_t"] = client.run(["ss", "-tHn", "state", "established"]).stdout

        dst = "10.0.1.2" if family == 4 else "dead:beef:1::2"
        payload = bytes(range(256)) * 24_000   # ~6 MB: several seconds' worth at 2x100 Mbit/s
        got = mptcp_transfer(server, client, dst, payload, during=look)
        assert got.received == payload
        srv = lab["server"].counters() - before["server"]
        cli = lab["client"].counters() - before["client"]
        tx = {k: v - tx0[k] for k, v in tx_bytes(lab, "client").items()}

    srv.expect(MPTcpExtMPCapableSYNRX=1, MPTcpExtMPJoinSynRx=1, MPTcpExtMPJoinAckRx=1)
    cli.expect(MPTcpExtMPJoinSynAckRx=1)
    assert re.search(r"\bsubflows:1\b", seen["ss_M"]), seen["ss_M"]   # ss -M agrees: one join
    local = re.findall(r"^\S+\s+\S+\s+\[?([0-9a-f.:]+?)\]?:\d+\s", seen["ss_t"], re.MULTILINE)
    paths = sorted({"path 1" if a in ("10.0.1.1", "dead:beef:1::1") else
                    "path 2" if a in ("10.0.2.1", "dead:beef:2::1") else a for a in local})
    assert paths == ["path 1", "path 2"], seen["ss_t"]
    # each path carried a real share of the data
    assert tx["eth0"] > len(payload) // 5 and tx["eth1"] > len(payload) // 5, tx


def test_rate_limit_is_enforced_by_tbf():
    """The cellular link's 10 Mbit/s shaper is the one that holds packets back."""
    with Lab(catalogue.get("wifi-cellular")) as lab:
        client = lab["client"]
        # plain TCP from the cellular address: source routing sends it out of wwan0
        got = mptcp_transfer(lab["server"], client, "10.0.3.1", b"z" * 1_000_000,
                             proto=socket.IPPROTO_TCP, source="10.0.2.1")
        assert len(got.received) == 1_000_000
        index = {ln.get_attr("IFLA_IFNAME"): ln["index"] for ln in client.ipr.get_links()}
        tbf = {q["index"]: q.get_attr("TCA_STATS2") for q in client.ipr.get_qdiscs()
               if q.get_attr("TCA_KIND") == "tbf"}
        cell, wifi = tbf[index["wwan0"]], tbf[index["wlan0"]]
    assert cell.get_attr("TCA_STATS_BASIC")["bytes"] > 1_000_000
    assert wifi.get_attr("TCA_STATS_BASIC")["bytes"] < 100_000
    assert cell.get_attr("TCA_STATS_QUEUE")["overlimits"] > 0   # the bucket ran dry


@needs_nft
def test_loss_drops_packets_on_the_link():
    """5% loss on both ends of each link: packets are dropped, TCP retransmits, the data
    arrives whole. (10 MB: with GSO that is a few hundred packets each way, so the drops
    cannot all be pure ACKs, which nobody retransmits.)"""
    payload = b"l" * 10_000_000
    with Lab(catalogue.get("two-paths", rate=None, loss=5.0)) as lab:
        before = {n: lab[n].counters() for n in ("client", "server")}
        got = mptcp_transfer(lab["server"], lab["client"], "10.0.1.2", payload)
        assert got.received == payload                    # TCP repaired every loss
        drops = sum(sum(lab[n].nft_counters().values()) for n in ("client", "server"))
        retrans = sum((lab[n].counters() - before[n])["TcpRetransSegs"]
                      for n in ("client", "server"))
    assert drops > 0 and retrans > 0, (drops, retrans)


@needs_nft
def test_drop_mp_capable_syns_makes_the_connection_fall_back_to_tcp():
    topo = catalogue.get("client-router-server", middleboxes=[DropMpCapableSyn()])
    topo.nodes["client"].mptcp["syn_retrans_before_tcp_fallback"] = "0"  # retry at once
    with Lab(topo) as lab:
        before = lab["client"].counters()
        sock_state: dict[str, bool] = {}
        lst = lab["server"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        lst.settimeout(10)
        sock = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.settimeout(10)
        sock.connect(("10.0.2.1", 5000))
        conn, _ = lst.accept()
        sock.sendall(b"still works")
        assert conn.recv(100) == b"still works"
        sock_state["fallback"] = is_fallback(sock)
        delta = lab["client"].counters() - before
        dropped = sum(lab["router"].nft_counters().values())
        sock.close()
        conn.close()
    assert sock_state["fallback"]
    delta.expect(MPTcpExtMPCapableSYNTXDrop=1)   # kernel: SYN with MP_CAPABLE got no answer
    assert dropped == 1


@needs_nft
@pytest.mark.parametrize("segments, client_mib, server_mib", [
    ("all", {"MPTcpExtMPCapableFallbackSYNACK": 1}, {"MPTcpExtMPCapableSYNRX": 0}),
    ("syn-ack", {"MPTcpExtMPCapableFallbackSYNACK": 1},
     {"MPTcpExtMPCapableSYNRX": 1, "MPTcpExtMPCapableFallbackACK": 1}),
    ("non-syn", {"MPTcpExtMPCapableSYNACKRX": 1, "MPTcpExtMPCapableFallbackSYNACK": 0},
     {"MPTcpExtMPCapableSYNRX": 1, "MPTcpExtMPCapableFallbackACK": 1}),
])
def test_strip_mptcp_option_makes_both_ends_fall_back(segments, client_mib, server_mib):
    topo = catalogue.get("client-router-server",
                         middleboxes=[StripMptcpOption(segments)])
    with Lab(topo) as lab:
        before = {n: lab[n].counters() for n in ("client", "server")}
        payload = b"s" * 300_000
        got = mptcp_transfer(lab["server"], lab["client"], "10.0.2.1", payload)
        assert got.received == payload                  # TCP carries on without MPTCP
        cli = lab["client"].counters() - before["client"]
        srv = lab["server"].counters() - before["server"]
        stripped = sum(lab["router"].nft_counters().values())
    cli.expect(**client_mib)
    srv.expect(**server_mib)
    assert stripped >= 1


@needs_nft
def test_dropping_add_addr_echoes_makes_the_server_announce_again():
    topo = catalogue.get("two-paths", rate=None)
    topo.nodes["server"].mptcp["add_addr_timeout"] = "1"
    topo.nodes["client"].middlebox(DropMptcpSubtype("add_addr", echo=True, hook="output"))
    with Lab(topo) as lab:
        before = {n: lab[n].counters() for n in ("client", "server")}

        def wait_for_retransmission() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if (lab["server"].counters() - before["server"])["MPTcpExtAddAddrTx"] >= 3:
                    return
                time.sleep(0.1)

        mptcp_transfer(lab["server"], lab["client"], "10.0.1.2", b"e" * 10_000,
                       during=wait_for_retransmission)
        srv = lab["server"].counters() - before["server"]
        cli = lab["client"].counters() - before["client"]
    assert srv["MPTcpExtEchoAdd"] == 0            # no echo ever reached the server
    assert srv["MPTcpExtAddAddrTx"] >= 3          # so it announced again (timeout 1 s)
    assert cli["MPTcpExtEchoAddTx"] >= 3          # the client did echo each time
    assert cli["MPTcpExtAddAddr"] == srv["MPTcpExtAddAddrTx"]


def _gro_off(ifname: str) -> None:
    from pyroute2.ethtool.ioctl import IoctlEthtool

    eth = IoctlEthtool(ifname)
    try:
        eth.set_offload_flag("generic-receive-offload", 0)
    finally:
        eth.close()


@needs_nft
@needs_tcpdump
def test_corrupting_one_payload_byte_is_caught_only_by_the_dss_checksum(tmp_path):
    """One byte changed in flight with a valid TCP checksum: TCP accepts the segment, the
    DSS checksum fails and the receiver answers with MP_FAIL (RFC 8684 section 3.7).

    What the kernel does with the data after MP_FAIL is the conformance cases' business:
    only the detection is asserted here."""
    from scapy.all import IP, TCP, rdpcap

    box = CorruptPayload(nth=60, offset=10, value=0x42, dport=5000)
    topo = catalogue.get("client-router-server", middleboxes=[box], checksum=True)
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        server.call(_gro_off, "eth0")   # else the capture may see the byte inside a merged skb
        before = server.counters()
        pcap = tmp_path / "server.pcap"
        lst = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        lst.settimeout(10)
        with server.capture("eth0", pcap, filter="tcp dst port 5000"):
            sock = client.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            sock.settimeout(10)
            sock.connect(("10.0.2.1", 5000))
            conn, _ = lst.accept()
            conn.settimeout(0.2)
            sock.send(b"A" * 500_000)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and \
                    (server.counters() - before)["MPTcpExtMPFailTx"] == 0:
                with contextlib.suppress(OSError):
                    conn.recv(1 << 20)
        srv = server.counters() - before
        corrupted = sum(lab["router"].nft_counters().values())
        for s in (sock, conn, lst):
            s.close()
    assert corrupted == 1
    srv.expect(MPTcpExtDataCsumErr=1, MPTcpExtMPFailTx=1, TcpInCsumErrors=0)
    # the corrupted segment reached the server with a correct TCP checksum
    hits = [p for p in rdpcap(str(pcap)) if TCP in p and bytes(p[TCP].payload)[10:11] == b"B"]
    assert len(hits) == 1
    ip = bytes(hits[0][IP])
    tcp = ip[(ip[0] & 0xF) * 4:int.from_bytes(ip[2:4], "big")]
    assert tcp_checksum(ip[12:16], ip[16:20], tcp) == int.from_bytes(tcp[16:18], "big")


@needs_nft
def test_corruption_without_dss_checksum_reaches_the_application():
    box = CorruptPayload(nth=60, offset=10, value=0x42, dport=5000)
    topo = catalogue.get("client-router-server", middleboxes=[box], checksum=False)
    with Lab(topo) as lab:
        before = lab["server"].counters()
        got = mptcp_transfer(lab["server"], lab["client"], "10.0.2.1", b"A" * 4_000_000)
        srv = lab["server"].counters() - before
    assert got.received.count(b"B") == 1          # nothing noticed: one byte is wrong
    srv.expect(MPTcpExtDataCsumErr=0, TcpInCsumErrors=0)


@needs_nft
def test_nat_hides_the_client_and_mptcp_survives():
    topo = catalogue.get("client-router-server", middleboxes=[Nat(out="eth1")])
    with Lab(topo) as lab:
        lst = lab["server"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        lst.settimeout(10)
        sock = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.settimeout(10)
        sock.connect(("10.0.2.1", 5000))
        conn, peer = lst.accept()
        sock.sendall(b"through NAT")
        assert conn.recv(100) == b"through NAT"
        assert peer[0] == "10.0.2.254"               # the server sees the router's address
        assert not is_fallback(sock) and not is_fallback(conn)
        sock.close()
        conn.close()
        assert sum(lab["router"].nft_counters().values()) >= 1
