"""MP_JOIN against the Scapy peer, both ways: the kernel as the listener of a join (tokens,
HMACs, limits) and as its initiator (what it does with a bad or missing MP_JOIN in the
SYN-ACK, a withheld fourth ACK, a backup SYN-ACK). RFC 8684 §3.2.
"""

from __future__ import annotations

import os

import pytest
from support import (
    KERNEL_V4,
    PEER_V4,
    PORT,
    covers,
    needs,
    peer_lab,
    read_for,
    wait_counter,
    wait_for,
)

from mptcplab import crypto


def _payload_by_port(pl, since: int = 0) -> dict[tuple, int]:
    """Kernel data bytes that reached each of the peer's subflows (by `Subflow.key`) since
    segment #since."""
    out: dict[tuple, int] = {}
    for seg in pl.peer.segments[since:]:
        if seg.payload_len:
            key = (seg.dst, seg.dport, seg.src, seg.sport)
            out[key] = out.get(key, 0) + seg.payload_len
    return out


# -- the kernel as the join's listener ------------------------------------------------------------

@covers("3.2-join-token", "3.2-join-hmacs", "3.2-join-data")
def test_join_with_valid_token_and_hmac_carries_data(case):
    """The peer joins with the kernel's token: the SYN-ACK's truncated HMAC verifies, the
    kernel accepts the third ACK's HMAC and delivers data sent on the new subflow.
    RFC 8684 §3.2."""
    with peer_lab(case) as pl, pl.connected() as conn:
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        assert (sf.state, sf.hmac_ok) == ("established", True)
        pl.peer.send(b"j" * 5000, sf)
        assert read_for(conn, 5000) == b"j" * 5000
        pl.expect(MPTcpExtMPJoinSynRx=1, MPTcpExtMPJoinAckRx=1, MPTcpExtMPJoinAckHMacFailure=0)


@covers("3.2-unknown-token", "3.6-tcprst-reason")
def test_join_with_unknown_token_is_reset_with_mp_tcprst(case):
    """A join SYN naming a token no connection has: a RST (no SYN-ACK), carrying MP_TCPRST
    with reason "MPTCP-specific error". RFC 8684 §3.2, §3.6."""
    with peer_lab(case) as pl, pl.connected():
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2, token=pl.peer.remote_token ^ 0x5A5A5A5A)
        assert sf.state == "reset"
        (rst,) = [s for s in pl.peer.segments if s.dport == sf.sport]
        assert "R" in rst.tcp_flags and "S" not in rst.tcp_flags
        (opt,) = [o for o in rst.options if o["subtype"] == "MP_TCPRST"]
        assert opt["reason"] == 1, opt
        pl.expect(MPTcpExtMPJoinNoTokenFound=1, MPTcpExtMPJoinAckRx=0)


@pytest.mark.slow
@needs("ss", "net.mptcp.close_timeout")  # 60 s without the sysctl (absent on 6.1)
@covers("3.2-stale-token")
def test_join_with_the_token_of_a_closed_connection_is_reset(case):
    """The connection is gone (the application closed, the peer reset its subflow, `ss -M`
    lists no MPTCP socket but the listener): a join with its token is reset as unknown.
    Waits for the kernel to free the closed connection, ~1-2 s with close_timeout=1 (the
    sysctl bounding an orphaned connection's life; 60 s by default). RFC 8684 §3.2."""
    with peer_lab(case, kernel_mptcp={"close_timeout": 1}) as pl:
        lst = pl.listener()                  # stays open: the join reaches a listener
        pl.peer.connect(KERNEL_V4[0], PORT)
        conn, _ = lst.accept()
        conn.close()
        pl.peer.reset(pl.peer.subflows[0])
        # gone means no MPTCP socket but the listener (ss -M): until the kernel frees it, a
        # connection on its way out still owns the token (and refuses joins, MPJoinRejected)
        wait_for(lambda: not [line for line in pl.kernel.run(
            ["ss", "-MHn", "state", "all"]).stdout.splitlines() if "LISTEN" not in line],
            what="the kernel to free the connection")
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)     # the old connection's token
        assert sf.state == "reset"
        pl.expect(MPTcpExtMPJoinNoTokenFound=1)


@covers("3.2-ack-hmac", "3.6-tcprst-reason")
def test_join_with_bad_hmac_in_third_ack_is_reset_with_mp_tcprst(case):
    """A third ACK whose HMAC fails: RST with MP_TCPRST, reason MPTCP-specific error.
    RFC 8684 §3.2, §3.6."""
    with peer_lab(case) as pl, pl.connected():
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2, bad_hmac=True)
        _, rst = pl.peer.expect("MP_TCPRST", tcp_flags="R", where=lambda s, o: s.dport == sf.sport)
        assert (rst["reason"], rst["reason_name"]) == (1, "MPTCP-specific error")
        pl.expect(MPTcpExtMPJoinAckHMacFailure=1)


@covers("3.2-ack-no-join")
def test_join_third_ack_without_mp_join_is_reset(case):
    """The peer's third ACK of a join carries no MP_JOIN: the kernel resets the subflow
    (MP_TCPRST reason 1) and counts no completed join. RFC 8684 §3.2."""
    with peer_lab(case) as pl, pl.connected():
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2, third_ack=None)
        _, rst = pl.peer.expect("MP_TCPRST", tcp_flags="R", where=lambda s, o: s.dport == sf.sport)
        assert rst["reason"] == 1
        pl.expect(MPTcpExtMPJoinSynRx=1, MPTcpExtMPJoinAckRx=0)


@covers("3.2-join-limit", "3.6-tcprst-reason")
def test_join_beyond_the_subflow_limit_is_refused(case):
    """The kernel allows one extra subflow (limits subflows 1): the first join is taken, the
    second answered with a SYN-ACK and then a RST with MP_TCPRST "administratively
    prohibited"; data still flows on the others. RFC 8684 §3.2, §3.6."""
    with peer_lab(case, subflows=1) as pl, pl.connected() as conn:
        first = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        assert first.state == "established"
        extra = pl.peer.join(KERNEL_V4[1], PORT, addr_id=3)
        _, rst = pl.peer.expect("MP_TCPRST", tcp_flags="R",
                                where=lambda s, o: s.dport == extra.sport)
        assert rst["reason"] == 3, rst
        pl.peer.send(b"ok" * 100, first)
        assert read_for(conn, 200) == b"ok" * 100
        pl.expect(MPTcpExtMPJoinSynRx=2, MPTcpExtMPJoinAckRx=1, MPTcpExtMPJoinRejected=1)


@covers("3.2-backup")
def test_backup_subflow_carries_no_data_while_the_other_is_up(case):
    """A subflow the peer joined with B=1 is for use only when others fail: 200 kB from the
    kernel all go over the first subflow. RFC 8684 §3.2."""
    with peer_lab(case) as pl, pl.connected() as conn:
        first = pl.peer.subflows[0]
        backup = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2, backup=True)
        since, data = len(pl.peer.segments), os.urandom(200_000)
        conn.sendall(data)
        assert pl.peer.recv(len(data)) == data
        used = _payload_by_port(pl, since)
        assert used.get(first.key, 0) == len(data) and backup.key not in used, used
        pl.expect(MPTcpExtMPJoinSynBackupRx=1)


@covers("3.3-prio")
def test_mp_prio_moves_the_data_to_the_other_subflow(case):
    """MP_PRIO from the peer: first subflow to backup, the backup-joined one to regular; the
    kernel's next 200 kB go over the second. RFC 8684 §3.3.8."""
    with peer_lab(case) as pl, pl.connected() as conn:
        first = pl.peer.subflows[0]
        second = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2, backup=True)
        pl.peer.mp_prio(True, first)
        pl.peer.mp_prio(False, second)
        wait_counter(pl.kernel, pl.before, "MPTcpExtMPPrioRx", at_least=2)
        since, data = len(pl.peer.segments), os.urandom(200_000)
        conn.sendall(data)
        assert pl.peer.recv(len(data)) == data
        used = _payload_by_port(pl, since)
        assert used.get(second.key, 0) == len(data) and first.key not in used, used
        pl.expect(MPTcpExtMPPrioRx=2)


# -- the kernel as the join's initiator -------------------------------------------------------------

def _kernel_joining(case):
    """A peer lab where the kernel has a subflow endpoint on 10.0.2.2: once the peer has sent
    a DSS, the kernel joins the peer's 10.0.1.1:6000 from there."""
    return peer_lab(case, kernel_endpoints=((KERNEL_V4[1], ("subflow",)),))


@pytest.mark.parametrize("join_synack,counter", [
    pytest.param({"truncated_hmac": 0x0123456789ABCDEF}, "MPTcpExtMPJoinSynAckHMacFailure",
                 id="bad-hmac", marks=covers("3.2-synack-hmac")),
    pytest.param(None, None, id="no-mp-join", marks=covers("3.2-synack-no-join"))])
@covers("3.6-tcprst-reason")
def test_kernel_resets_a_join_whose_synack_fails(case, join_synack, counter):
    """The kernel joins the peer; the peer's SYN-ACK carries a wrong truncated HMAC, or no
    MP_JOIN at all: the kernel closes the subflow with a RST carrying MP_TCPRST (reason 1)
    instead of a third ACK. RFC 8684 §3.2."""
    with _kernel_joining(case) as pl, pl.kernel_connects(join_synack=join_synack):
        pl.peer.send(b"go")
        syn, _ = pl.peer.expect("MP_JOIN", tcp_flags="S")
        rst, opt = pl.peer.expect("MP_TCPRST", tcp_flags="R",
                                  where=lambda s, o: s.sport == syn.sport)
        assert opt["reason"] == 1
        assert not any(o["subtype"] == "MP_JOIN" and o["length"] == 24
                       for s in pl.peer.segments for o in s.options), "third ACK sent"
        pl.expect(MPTcpExtMPJoinSynTx=1, MPTcpExtMPJoinSynAckRx=0, MPTcpExtMPRstTx=1,
                  **({counter: 1} if counter else {}))


@pytest.mark.slow
@covers("3.2-fourth-ack", "3.2-no-data-before-fourth")
def test_kernel_retransmits_its_third_ack_and_sends_no_data_until_the_fourth(case):
    """The peer withholds the fourth ACK of the kernel's join: the kernel sends its third ACK
    (MP_JOIN with the HMAC) again, and puts none of 100 kB of data on that subflow; once the
    peer acknowledges, the subflow carries data. Waits for one retransmission of the third
    ACK (its timer: the subflow's RTO, at least 200 ms; ~0.2-1 s seen). RFC 8684 §3.2."""
    def third_acks(joined):
        return [s for s in pl.peer.segments if s.sport == joined.dport and
                any(o["subtype"] == "MP_JOIN" and o["length"] == 24 for o in s.options)]

    with _kernel_joining(case) as pl, pl.kernel_connects(fourth_ack=False) as sock:
        pl.peer.send(b"go")
        joined = pl.peer.accept()
        since = len(pl.peer.segments)
        data = os.urandom(100_000)
        sock.sendall(data)
        wait_for(lambda: len(pl.peer.received) >= len(data), what="the data on subflow 1")
        acks = wait_for(lambda: (a := third_acks(joined)) and len(a) >= 2 and a,
                        what="a retransmission of the third ACK", timeout=5)
        gaps = [round(b.time - a.time, 3) for a, b in zip(acks, acks[1:])]
        case.note("third ACK intervals (s)", str(gaps))
        assert all(g < 2.0 for g in gaps), gaps
        assert {s.seq for s in acks} == {acks[0].seq}           # the same segment again
        used = _payload_by_port(pl, since)
        assert joined.key not in used, used
        pl.peer.complete_join(joined)
        pl.peer.mp_prio(True, pl.peer.subflows[0])     # push the data to the joined one
        since = len(pl.peer.segments)
        sock.sendall(os.urandom(50_000))
        wait_for(lambda: _payload_by_port(pl, since).get(joined.key, 0) > 0,
                 what="data on the joined subflow after the fourth ACK")


@covers("3.2-backup")
def test_backup_flag_in_the_peers_synack_keeps_the_kernels_data_off(case):
    """The peer answers the kernel's join with B=1 in its SYN-ACK (send to me there only as
    a backup): the kernel counts a backup SYN-ACK and its 100 kB go over the first subflow.
    RFC 8684 §3.2."""
    with _kernel_joining(case) as pl, pl.kernel_connects(backup=True) as sock:
        pl.peer.send(b"go")
        joined = pl.peer.accept()
        since, data = len(pl.peer.segments), os.urandom(100_000)
        sock.sendall(data)
        wait_for(lambda: len(pl.peer.received) >= len(data), what="the data")
        used = _payload_by_port(pl, since)
        assert joined.key not in used and sum(used.values()) >= len(data), used
        pl.expect(MPTcpExtMPJoinSynAckBackupRx=1)


@covers("3.4-join-failed-retry")
def test_failed_join_is_not_retried_until_announced_again(case):
    """The peer announces 10.0.2.1:6001 and refuses the kernel's join there (RST): the
    kernel does not try again by itself (0.6 s of quiet, several RTOs); the peer announces
    the same address again (same id) and the kernel joins once more. RFC 8684 §3.4.1."""
    with peer_lab(case) as pl, pl.kernel_connects(ports=(6000, 6001)):
        pl.peer._listeners[6001].refuse_join = True
        pl.peer.add_addr(PEER_V4[1], 2, port=6001)
        pl.peer.expect("MP_JOIN", tcp_flags="S")
        pl.peer.expect_none("MP_JOIN", tcp_flags="S", within=0.6)
        pl.peer._listeners[6001].refuse_join = False
        pl.peer.add_addr(PEER_V4[1], 2, port=6001)
        seg, _ = pl.peer.expect("MP_JOIN", tcp_flags="S")
        assert (seg.dst, seg.dport) == (PEER_V4[1], 6001)
        pl.peer.accept()
        pl.expect(MPTcpExtMPJoinSynTx=2, MPTcpExtAddAddr=2)


@covers("3.2-join-token", "3.2-join-hmacs")
def test_kernel_join_hmacs_verify(case):
    """The kernel's own join to the peer: the SYN names the peer's token, the third ACK's
    HMAC is the one of the kernel's key first and both nonces. RFC 8684 §3.2."""
    with _kernel_joining(case) as pl, pl.kernel_connects():
        pl.peer.send(b"go")
        joined = pl.peer.accept()
        (syn,) = [o for s in pl.peer.segments for o in s.options
                  if o["subtype"] == "MP_JOIN" and o["length"] == 12]
        assert syn["token"] == pl.peer.token
        (ack,) = [o for s in pl.peer.segments for o in s.options
                  if o["subtype"] == "MP_JOIN" and o["length"] == 24]
        assert ack["hmac"] == crypto.join_ack_hmac(pl.peer.remote_key, pl.peer.key,
                                                   joined.remote_nonce, joined.local_nonce).hex()
        pl.expect(MPTcpExtMPJoinSynAckRx=1)
