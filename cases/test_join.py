"""MP_JOIN between two kernels: the crypto of the join, data on both paths, backup subflows
and MP_PRIO."""

from __future__ import annotations

import pytest
from support import covers, expect_counters, needs, wait_counter

from mptcplab import crypto
from mptcplab.facts import (
    bytes_outside,
    data_ranges,
    find_options,
    mptcp_keys,
    payload_bytes,
)
from mptcplab.topo import Lab, catalogue
from mptcplab.traffic import connect, pattern

SERVER = "10.0.3.1"             # wifi-cellular: the server behind the router
WIFI, CELL = "10.0.1.1", "10.0.2.1"

pytestmark = needs("tcpdump")


@pytest.mark.parametrize("family", [4, 6])
@covers("3.2-join-token", "3.2-join-hmacs", "3.2-join-data")
def test_join_hmacs_and_data_on_both_paths(case, family):
    """The client joins the announced address: the SYN names the server's token, the SYN-ACK
    and third ACK carry the HMACs of both keys and nonces, and the new subflow carries a real
    share of the data. RFC 8684 §3.2."""
    dst, second = ("10.0.1.2", "10.0.2.2") if family == 4 else ("dead:beef:1::2",
                                                                "dead:beef:2::2")
    topo = catalogue.get("two-paths", rate="20mbit")
    server_node = topo.nodes["server"]
    server_node.endpoints = [ep for ep in server_node.endpoints if ep.addr.version == family]
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, dst) as conn:
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            data = pattern(1_500_000)
            assert conn.upload(data) == data
            assert conn.download(data) == data
        expect_counters(server, before["server"], MPTcpExtMPJoinSynRx=1, MPTcpExtMPJoinAckRx=1,
                        MPTcpExtMPJoinAckHMacFailure=0)
        expect_counters(client, before["client"], MPTcpExtMPJoinSynAckRx=1,
                        MPTcpExtMPJoinSynAckHMacFailure=0)
        segs = cap.segments()
    client_key, server_key = mptcp_keys(segs)
    (syn_seg, syn), = find_options(segs, "MP_JOIN", length=12)
    (_, synack), = find_options(segs, "MP_JOIN", length=16)
    (_, ack), = find_options(segs, "MP_JOIN", length=24)
    assert syn_seg.dst == second
    assert syn["token"] == crypto.key_token(server_key)
    assert synack["truncated_hmac"] == crypto.join_synack_hmac(
        server_key, client_key, synack["nonce"], syn["nonce"])
    assert ack["hmac"] == crypto.join_ack_hmac(client_key, server_key, syn["nonce"],
                                               synack["nonce"]).hex()
    path2 = syn_seg.src
    up2 = payload_bytes(segs, src=path2, port=5000)
    down2 = payload_bytes(segs, dst=path2, port=5000)
    assert up2 > len(data) // 10 and down2 > len(data) // 10, (up2, down2)


def sent_first(segs, *, on: str, beside: str, since: int = 0, until: int | None = None) -> int:
    """Data bytes carried over `on` and never over `beside` in segs[since:until]: what the
    scheduler put there first. (Copies of data the other path carried are reinjections, which
    Linux sends on a backup when the regular subflow looks stale.)"""
    return bytes_outside(data_ranges(segs, addr=on, since=since, until=until),
                         data_ranges(segs, addr=beside, since=since, until=until))


@needs("MPTcpExtMPJoinSynBackupRx")
@covers("3.2-backup", "3.3-reinject")
def test_backup_subflow_only_when_needed(case):
    """The cellular endpoint is a backup: its MP_JOIN has B=1 and no data goes there first
    while the WiFi subflow is up; once the WiFi subflow is closed all data goes over cellular.
    RFC 8684 §3.2 (B flag), §3.3.8."""
    data = pattern(400_000)
    with Lab(catalogue.get("wifi-cellular", backup=True, wifi_rate="20mbit",
                           cell_rate="20mbit")) as lab:
        client, server = lab["client"], lab["server"]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, SERVER) as conn:
            conn.upload(b"hi")      # the client's PM opens subflows once MPTCP is confirmed
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            assert conn.upload(data) == data and conn.download(data) == data
            both_up = cap.mark()
            client.pm.endpoint("del", id=0, addr=WIFI)        # close the initial subflow
            wait_counter(client, before["client"], "MPTcpExtRmSubflow")
            wifi_closed = cap.mark()
            assert conn.upload(data) == data and conn.download(data) == data
        expect_counters(server, before["server"], MPTcpExtMPJoinSynBackupRx=1)
        segs = cap.segments()
    (syn_seg, syn), = find_options(segs, "MP_JOIN", length=12)
    assert syn["backup"] is True and syn_seg.src == CELL
    assert sent_first(segs, on=CELL, beside=WIFI, until=both_up) == 0
    assert payload_bytes(segs[:both_up], src=WIFI) >= len(data)
    assert payload_bytes(segs[:both_up], dst=WIFI) >= len(data)
    after = segs[wifi_closed:]
    assert payload_bytes(after, src=WIFI) + payload_bytes(after, dst=WIFI) == 0
    assert payload_bytes(after, src=CELL) >= len(data)
    assert payload_bytes(after, dst=CELL) >= len(data)


@pytest.mark.slow
@needs("MPTcpExtMPPrioTx", "MPTcpExtMPPrioRx")
@pytest.mark.parametrize("direction", ["upload", "download"])
@covers("3.3-prio")
def test_mp_prio_moves_traffic_off_and_back(case, direction):
    """Setting the cellular endpoint to backup mid-connection sends MP_PRIO B=1 and new data
    stops going there; clearing it sends MP_PRIO B=0 and the data comes back.
    RFC 8684 §3.3.8."""
    data = pattern(1_000_000)
    with Lab(catalogue.get("wifi-cellular", wifi_rate="20mbit", cell_rate="20mbit")) as lab:
        client, server = lab["client"], lab["server"]
        (ep,) = [e for e in client.pm.endpoint("show") if e["addr"] == CELL]
        cap = case.capture(client, "any", filter="tcp port 5000")
        before = {n: lab[n].counters() for n in ("client", "server")}
        with connect(client, server, SERVER) as conn:
            move = conn.upload if direction == "upload" else conn.download
            conn.upload(b"hi")      # the client's PM opens subflows once MPTCP is confirmed
            wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            marks = [0]
            assert move(data) == data
            marks.append(cap.mark())
            client.pm.endpoint("set", id=ep["id"], flags=["backup"])
            wait_counter(server, before["server"], "MPTcpExtMPPrioRx")
            marks.append(cap.mark())
            assert move(data) == data
            marks.append(cap.mark())
            client.pm.endpoint("set", id=ep["id"], flags=[])
            wait_counter(server, before["server"], "MPTcpExtMPPrioRx", at_least=2)
            marks.append(cap.mark())
            assert move(data) == data
        expect_counters(client, before["client"], MPTcpExtMPPrioTx=2)
        segs = cap.segments()
    prios = [(s.src, o["backup"]) for s, o in find_options(segs, "MP_PRIO")]
    assert prios == [(CELL, True), (CELL, False)]
    regular, backup, again = (slice(marks[0], marks[1]), slice(marks[2], marks[3]),
                              slice(marks[4], None))
    assert sent_first(segs, on=CELL, beside=WIFI, since=regular.start,
                      until=regular.stop) > len(data) // 10
    assert sent_first(segs, on=CELL, beside=WIFI, since=backup.start, until=backup.stop) == 0
    assert sent_first(segs, on=CELL, beside=WIFI, since=again.start) > len(data) // 10
