"""Path management between two kernels, the counterparts of mptcp_join.sh's groups that had
none here: syncookies, deny_join_id0, fullmesh, endpoint (driven by iproute2, an independent
implementation), userspace, subflows_error, link_failure, v4mapped. RFC 8684 §3.1-§3.4.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
from support import covers, expect_counters, needs, wait_counter, wait_for

from mptcplab import crypto
from mptcplab.facts import find_options, mptcp_keys, payload_bytes
from mptcplab.topo import Lab, catalogue
from mptcplab.traffic import connect, pattern

pytestmark = needs("tcpdump")


def two_paths_v4(rate: str | None = None):
    """two-paths with the server announcing only 10.0.2.2."""
    topo = catalogue.get("two-paths", rate=rate)
    server = topo.nodes["server"]
    server.endpoints = [ep for ep in server.endpoints if ep.addr.version == 4]
    return topo


def subflows(host, dst: str | None = None) -> list[str]:
    """Established TCP connections of `host` (towards `dst`), by ss."""
    cmd = ["ss", "-tnH", "state", "established"] + (["dst", dst] if dst else [])
    return [line for line in host.run(cmd).stdout.splitlines() if line.strip()]


@needs("MPTcpExtMPJoinAckRx", "TcpExtSyncookiesSent")
@covers("3.1-syncookies", "3.2-join-hmacs")
def test_syn_cookies_on_the_listener_keep_mptcp_and_joins(case):
    """The server answers every SYN with a cookie (tcp_syncookies=2: no state until the third
    ACK): the connection is still MPTCP (the third ACK's two keys are enough) and the join
    to the announced address still completes (mptcp_join.sh's syncookies group).
    RFC 8684 §3.1."""
    topo = two_paths_v4()
    topo.nodes["server"].sysctls["net.ipv4.tcp_syncookies"] = "2"
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2") as conn:
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert conn.upload(pattern(50_000)) == pattern(50_000)
            assert conn.fallback == (False, False)
        delta = expect_counters(server, before["server"], MPTcpExtMPCapableACKRX=1,
                                MPTcpExtMPJoinAckRx=1)
        assert delta["TcpExtSyncookiesSent"] >= 2, "no SYN cookies were sent"
        segs = cap.segments()
    client_key, server_key = mptcp_keys(segs)
    (_, syn), = find_options(segs, "MP_JOIN", length=12)
    assert syn["token"] == crypto.key_token(server_key)


@needs("net.mptcp.allow_join_initial_addr_port")
@covers("3.1-c-flag-send", "3.1-c-flag-recv")
def test_listener_refusing_joins_to_its_initial_address_sets_c(case):
    """The server refuses joins to its initial address and port
    (allow_join_initial_addr_port=0): its SYN-ACK sets C, and the client, whose cellular
    subflow endpoint would otherwise join 10.0.3.1:5000, opens no subflow (mptcp_join.sh's
    deny_join_id0 group). RFC 8684 §3.1."""
    topo = catalogue.get("wifi-cellular", wifi_rate="100mbit", cell_rate="100mbit")
    topo.nodes["server"].mptcp["allow_join_initial_addr_port"] = "0"
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.3.1") as conn:
            assert conn.upload(pattern(100_000)) == pattern(100_000)
            assert conn.download(pattern(100_000)) == pattern(100_000)
            time.sleep(0.3)      # a join would have followed the first DSS within ~1 ms
            expect_counters(client, before["client"], MPTcpExtMPJoinSynTx=0)
        segs = cap.segments()
    (_, synack), = find_options(segs, "MP_CAPABLE", length=12)
    assert "C" in synack["flags"], synack
    assert find_options(segs, "MP_JOIN") == []


@needs("MPTcpExtMPJoinAckRx")
@covers("3.4-path-management", "3.2-join-data")
def test_fullmesh_endpoint_joins_every_announced_address_from_it(case):
    """Both client addresses are fullmesh endpoints and the server announces 10.0.2.2: the
    client opens a subflow from each of its addresses to each server address (4 in all, 3
    joins) and data moves over several (mptcp_join.sh's fullmesh group). RFC 8684 §3.4."""
    topo = two_paths_v4()
    client_node = topo.nodes["client"]
    client_node.set_limits(subflows=4, add_addr_accepted=1)
    topo.nodes["server"].set_limits(subflows=4, add_addr_accepted=1)
    client_node.endpoint("10.0.1.1", "subflow", "fullmesh")
    client_node.endpoint("10.0.2.1", "subflow", "fullmesh")
    data = pattern(2_000_000)
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2") as conn:
            conn.upload(b"hi")
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx", at_least=3)
            assert conn.upload(data) == data
        expect_counters(server, before["server"], MPTcpExtMPJoinAckRx=3)
        segs = cap.segments()
    pairs = {(s.src, s.dst) for s in segs if s.tcp_flags == "S"}
    assert pairs == {("10.0.1.1", "10.0.1.2"), ("10.0.2.1", "10.0.1.2"),
                     ("10.0.1.1", "10.0.2.2"), ("10.0.2.1", "10.0.2.2")}, pairs
    moved = {(s.src, s.dst) for s in segs if s.payload_len and s.dport == 5000}
    assert len(moved) >= 2, moved


@needs("ip")
@covers("3.4-path-management", "3.4-remove-addr")
def test_endpoint_added_and_removed_with_iproute2_mid_connection(case):
    """`ip mptcp endpoint add 10.0.2.1 subflow` on the client during a connection opens a
    subflow from it; `ip mptcp endpoint delete` closes it again with a REMOVE_ADDR for its
    id, and the connection carries on (mptcp_join.sh's endpoint group, with iproute2 as the
    independent path-manager client). RFC 8684 §3.4."""
    topo = two_paths_v4()
    topo.nodes["server"].endpoints = []               # no announcement: only the client acts
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2") as conn:
            assert conn.upload(b"x" * 1000) == b"x" * 1000
            client.run(["ip", "mptcp", "endpoint", "add", "10.0.2.1", "id", "7", "subflow"],
                       check=True)
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert "id 7" in client.run(["ip", "mptcp", "endpoint", "show"]).stdout
            client.run(["ip", "mptcp", "endpoint", "delete", "id", "7"], check=True)
            wait_counter(server, before["server"], "MPTcpExtRmAddr")
            wait_for(lambda: not subflows(client, "10.0.1.2") or
                     all("10.0.2.1" not in line for line in subflows(client)),
                     what="the subflow from 10.0.2.1 closed")
            assert conn.upload(pattern(100_000)) == pattern(100_000)
        segs = cap.segments()
    removes = find_options(segs, "REMOVE_ADDR")
    assert [(s.src, o["addr_ids"]) for s, o in removes] == [("10.0.1.1", [7])]
    (syn, _), = find_options(segs, "MP_JOIN", length=12)
    assert syn.src == "10.0.2.1"


@needs("net.mptcp.pm_type", "ip")
@covers("3.4-path-management")
def test_userspace_path_manager_leaves_the_kernel_silent(case):
    """With the user-space path manager (pm_type=1) on both hosts, the in-kernel endpoints no
    longer act: no ADD_ADDR and no MP_JOIN although the server has a signal endpoint, while
    `ip mptcp monitor` (iproute2) reports the connection's CREATED and ESTABLISHED events
    with the token seen on the wire (mptcp_join.sh's userspace group, without announcing:
    this iproute2 has no user-space PM commands). RFC 8684 §3.4."""
    topo = two_paths_v4()
    for name in ("client", "server"):
        topo.nodes[name].mptcp["pm_type"] = "1"
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        monitor = server.spawn(["ip", "mptcp", "monitor"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)                       # the monitor subscribes before the connection
        with connect(client, server, "10.0.1.2") as conn:
            assert conn.upload(pattern(100_000)) == pattern(100_000)
            assert conn.download(pattern(100_000)) == pattern(100_000)
            time.sleep(0.3)                   # an in-kernel PM would have acted by now
        monitor.terminate()
        events = monitor.communicate(timeout=5)[0]
        segs = cap.segments()
    assert find_options(segs, "ADD_ADDR") == [] and find_options(segs, "MP_JOIN") == []
    _, server_key = mptcp_keys(segs)
    token = f"{crypto.key_token(server_key):08x}"
    created = [line for line in events.splitlines() if line.startswith("[       CREATED]")
               or "CREATED" in line]
    assert any(f"token={token}" in line for line in created), events
    assert any("ESTABLISHED" in line and f"token={token}" in line
               for line in events.splitlines()), events


@needs("nft", "MPTcpExtMPJoinSynTx")
@covers("3.4-path-management")
def test_join_refused_by_the_path_leaves_the_data_intact(case):
    """The server's side of path 2 rejects the join SYN with a TCP RST (nft): the client
    counts the failed attempt, the connection stays on path 1 and both directions arrive
    intact (mptcp_join.sh's subflows_error group). RFC 8684 §3.2."""
    topo = two_paths_v4()
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        server.nft("table inet mptl_case_reject {\n chain input { type filter hook input "
                   "priority 0; policy accept;\n  ip daddr 10.0.2.2 tcp dport 5000 "
                   "tcp flags & (syn | ack) == syn counter reject with tcp reset\n }\n}\n")
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2") as conn:
            wait_counter(client, before["client"], "MPTcpExtMPJoinSynTx")
            data = pattern(300_000)
            assert conn.upload(data) == data and conn.download(data) == data
            assert conn.fallback == (False, False)
        expect_counters(client, before["client"], MPTcpExtMPJoinSynAckRx=0)
        expect_counters(server, before["server"], MPTcpExtMPJoinSynRx=0)
        segs = cap.segments()
    assert [s.src for s in segs if "R" in s.tcp_flags] == ["10.0.2.2"]
    assert payload_bytes(segs, src="10.0.2.1") + payload_bytes(segs, dst="10.0.2.1") == 0


@pytest.mark.slow
@needs("MPTcpExtMPJoinAckRx")
@covers("3.3-reinject")
def test_link_failure_mid_transfer_moves_the_data_to_the_other_path(case):
    """Both paths carry a 3 MB upload when path 2 goes down (the client's eth1 set down):
    the data still arrives whole, in order, the rest over path 1 (mptcp_join.sh's
    link_failure group). RFC 8684 §3.3.6 (data may be sent again on another subflow)."""
    topo = two_paths_v4(rate="50mbit")
    data = pattern(3_000_000)
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "10.0.1.2", timeout=20) as conn:
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")

            def cut() -> None:
                time.sleep(0.15)
                (idx,) = client.ipr.link_lookup(ifname="eth1")
                client.ipr.link("set", index=idx, state="down")

            threading.Thread(target=cut, daemon=True).start()
            assert conn.upload(data) == data
            assert conn.fallback == (False, False)
        delta = server.counters() - before["server"]
    case.note("server deltas", str(delta.nonzero("MPTcpExt")))


@covers("3.4-mixed-families", "3.2-join-data")
def test_v4_mapped_connection_joins_an_ipv4_address(case):
    """The client's IPv6 socket connects to ::ffff:10.0.1.2 (an IPv4 subflow under an IPv6
    socket) and the server announces 10.0.2.2: the join completes and data flows on both
    paths (mptcp_join.sh's v4mapped group). RFC 8684 §3.4."""
    topo = catalogue.get("two-paths", rate="20mbit")
    topo.nodes["server"].endpoints = [ep for ep in topo.nodes["server"].endpoints
                                      if ep.addr.version == 4]
    data = pattern(1_000_000)
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, "::ffff:10.0.1.2") as conn:
            assert conn.client.family == socket.AF_INET6
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert conn.upload(data) == data
        segs = cap.segments()
    assert payload_bytes(segs, src="10.0.2.1") > len(data) // 10
    assert all(":" not in s.src for s in segs)                   # IPv4 on the wire
