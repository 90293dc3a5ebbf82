"""Fallback to TCP: middleboxes that drop or strip MPTCP options, kernel on both ends."""

from __future__ import annotations

import pytest
from support import covers, expect_counters, needs

from mptcplab.facts import has
from mptcplab.topo import DropMpCapableSyn, Lab, StripMptcpOption, catalogue
from mptcplab.traffic import pattern, transfer

SERVER = "10.0.2.1"          # client-router-server: the server behind the router
UP, DOWN = pattern(30_000), pattern(20_000, seed=1)

pytestmark = needs("nft", "tcpdump")


def syns(segments):
    """The client's SYNs, as True (MP_CAPABLE) / False (plain)."""
    return [has(s, "MP_CAPABLE") for s in segments if s.tcp_flags == "S"]


@pytest.mark.slow
@needs("net.mptcp.syn_retrans_before_tcp_fallback", "net.mptcp.blackhole_timeout",
       "MPTcpExtMPCapableSYNTXDrop", "MPTcpExtBlackhole", "MPTcpExtMPCapableSYNTXDisabled")
@pytest.mark.parametrize("retries", [0, 1, 2, 3])
@covers("3.1-syn-fallback")
def test_syn_retries_then_tcp_then_blackhole(case, retries):
    """SYNs with MP_CAPABLE dropped: 1 + syn_retrans_before_tcp_fallback of them, then a plain
    SYN and a working TCP connection; MPTCP then stays off (blackhole_timeout) for the next
    connection. The SYNs go out 1 s apart (the initial RTO; this kernel's
    tcp_syn_linear_timeouts keeps the first retransmissions linear), checked within
    0.9-1.6 s: the case must wait N + 1 s of kernel timers, no sysctl shortens the initial
    RTO. RFC 8684 §3.1 (local policy decides how many MP_CAPABLE SYNs before TCP)."""
    topo = catalogue.get("client-router-server", middleboxes=[DropMpCapableSyn()])
    topo.nodes["client"].mptcp.update(syn_retrans_before_tcp_fallback=str(retries),
                                      blackhole_timeout="60")
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "eth0", filter="tcp port 5000 or tcp port 5001")
        before = client.counters()
        first = transfer(client, server, SERVER, upload=UP, download=DOWN)
        second = transfer(client, server, SERVER, upload=UP, download=DOWN, port=5001)
        expect_counters(client, before, MPTcpExtMPCapableSYNTXDrop=1, MPTcpExtBlackhole=1,
                        MPTcpExtMPCapableSYNTXDisabled=1, MPTcpExtMPCapableSYNTX=1)
        first_syns = syns([s for s in cap.segments() if 5000 in (s.sport, s.dport)])
        second_syns = syns([s for s in cap.segments() if 5001 in (s.sport, s.dport)])
        times = [s.time for s in cap.segments() if s.tcp_flags == "S" and s.dport == 5000]
    gaps = [b - a for a, b in zip(times, times[1:])]
    case.note("SYN intervals (s)", str([round(g, 3) for g in gaps]))
    assert all(0.9 <= g <= 1.6 for g in gaps), gaps
    assert first_syns == [True] * (1 + retries) + [False]
    assert second_syns == [False]
    assert first.intact and second.intact
    assert first.client_fallback and first.server_fallback


@pytest.mark.slow
@needs("net.mptcp.syn_retrans_before_tcp_fallback", "net.mptcp.blackhole_timeout",
       "MPTcpExtBlackhole")
@covers("3.1-syn-fallback")
def test_no_blackhole_timeout_means_mptcp_is_tried_again(case):
    """blackhole_timeout=0: a connection that fell back does not turn MPTCP off, the next one
    starts with MP_CAPABLE again. RFC 8684 §3.1."""
    topo = catalogue.get("client-router-server", middleboxes=[DropMpCapableSyn()])
    topo.nodes["client"].mptcp.update(syn_retrans_before_tcp_fallback="0", blackhole_timeout="0")
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "eth0", filter="tcp port 5000 or tcp port 5001")
        before = client.counters()
        first = transfer(client, server, SERVER, upload=UP)
        second = transfer(client, server, SERVER, upload=UP, port=5001)
        expect_counters(client, before, MPTcpExtMPCapableSYNTXDrop=2, MPTcpExtBlackhole=0,
                        MPTcpExtMPCapableSYNTXDisabled=0, MPTcpExtMPCapableSYNTX=2)
        segs = cap.segments()
    assert syns([s for s in segs if 5000 in (s.sport, s.dport)]) == [True, False]
    assert syns([s for s in segs if 5001 in (s.sport, s.dport)]) == [True, False]
    assert first.intact and second.intact


STRIP = {
    # segments stripped: client counters, server counters
    "all": ({"MPTcpExtMPCapableSYNTX": 1, "MPTcpExtMPCapableFallbackSYNACK": 1},
            {"MPTcpExtMPCapableSYNRX": 0, "MPTcpExtMPCapableFallbackACK": 0}),
    "syn-ack": ({"MPTcpExtMPCapableSYNTX": 1, "MPTcpExtMPCapableFallbackSYNACK": 1},
                {"MPTcpExtMPCapableSYNRX": 1, "MPTcpExtMPCapableFallbackACK": 1}),
    "non-syn": ({"MPTcpExtMPCapableSYNACKRX": 1, "MPTcpExtMPCapableFallbackSYNACK": 0},
                {"MPTcpExtMPCapableSYNRX": 1, "MPTcpExtMPCapableFallbackACK": 1}),
}


@pytest.mark.parametrize("segments", [
    pytest.param("all", id="all"),
    pytest.param("syn-ack", id="syn-ack", marks=covers("3.1-synack-stripped")),
    pytest.param("non-syn", id="non-syn", marks=covers("3.1-mpc-data-no-dss"))])
@covers("3.7-strip")
def test_stripped_options_fall_back_with_data_intact(case, segments):
    """A middlebox on the router removes the MPTCP option from all / SYN-ACK / non-SYN
    segments: both ends fall back to TCP, each counts why, and the data arrives intact both
    ways. Captured at both hosts, so each capture shows what that kernel sent (before the
    box) and what reached it (after). RFC 8684 §3.7."""
    client_mib, server_mib = STRIP[segments]
    topo = catalogue.get("client-router-server", middleboxes=[StripMptcpOption(segments)])
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        at_client = case.capture(client, "eth0", filter="tcp port 5000", name="in")
        at_server = case.capture(server, "eth0", filter="tcp port 5000", name="in")
        before = {n: lab[n].counters() for n in ("client", "server")}
        got = transfer(client, server, SERVER, upload=UP, download=DOWN)
        expect_counters(client, before["client"], **client_mib)
        expect_counters(server, before["server"], **server_mib)
        to_server = [s for s in at_server.segments() if s.dst == SERVER]
        to_client = [s for s in at_client.segments() if s.src == SERVER]
        from_client = [s for s in at_client.segments() if s.dst == SERVER]
        from_server = [s for s in at_server.segments() if s.src == SERVER]
    # what the kernels sent, before the box
    assert [has(s, "MP_CAPABLE") for s in from_client if s.tcp_flags == "S"] == [True]
    assert [has(s, "MP_CAPABLE") for s in from_server if s.tcp_flags == "SA"] == \
        [segments != "all"]                     # the server answers MP_CAPABLE if it saw it
    third = [s for s in from_client if s.tcp_flags == "A" and not s.payload_len][:1]
    assert [has(s, "MP_CAPABLE") for s in third] == [segments == "non-syn"]
    assert got.intact
    assert got.client_fallback and got.server_fallback
    assert not any(s.options for s in to_client if "S" not in s.tcp_flags)
    synack_mpc = [has(s, "MP_CAPABLE") for s in to_client if s.tcp_flags == "SA"]
    syn_mpc = [has(s, "MP_CAPABLE") for s in to_server if s.tcp_flags == "S"]
    assert syn_mpc == [segments != "all"]
    assert synack_mpc == [segments == "non-syn"]
    assert not any(s.options for s in to_server if "S" not in s.tcp_flags)
