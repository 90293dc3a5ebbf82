"""Signals against the Scapy peer: ADD_ADDR / REMOVE_ADDR (§3.4), MP_FASTCLOSE (§3.5),
MP_TCPRST (§3.6), and the rules across §3: TCP's checks come before any MPTCP signal,
reserved bits are ignored on receipt.
"""

from __future__ import annotations

import socket

import pytest
from support import (
    KERNEL_V4,
    PEER_V4,
    PEER_V6,
    PORT,
    covers,
    needs,
    peer_lab,
    read_for,
    wait_counter,
    wait_for,
)

from mptcplab.layers import MPFastclose, MPPrio, MPRemoveAddr, MPTcpRst, craft
from mptcplab.peer import ACK, PSH, RST

pytestmark = needs("ss")


def _kernel_subflows(pl, peer_addr: str) -> int:
    """Established TCP subflows of the kernel towards `peer_addr` (ss)."""
    out = pl.kernel.run(["ss", "-tnH", "state", "established", "dst", peer_addr]).stdout
    return len([line for line in out.splitlines() if line.strip()])


# -- ADD_ADDR from the peer ------------------------------------------------------------------------

@pytest.mark.parametrize("family,addr,port", [
    (socket.AF_INET, PEER_V4[1], None),
    (socket.AF_INET, PEER_V4[1], 6001),
    (socket.AF_INET6, PEER_V6[1], None),
], ids=["ipv4", "ipv4-port", "ipv6"])
@covers("3.4-add-addr-hmac", "3.4-add-addr-echo", "3.4-add-addr-port", "3.2-join-token")
def test_kernel_echoes_a_valid_add_addr_and_joins_it(case, family, addr, port):
    """An ADD_ADDR with a valid HMAC is echoed (E=1, same id, address and port, no HMAC) and
    the path manager opens a subflow to it with the peer's token. RFC 8684 §3.4.1."""
    with peer_lab(case) as pl, pl.kernel_connects(family, ports=(6000, 6001)) as sock:
        pl.peer.add_addr(addr, 5, port=port)
        _, echo = pl.peer.expect("ADD_ADDR", echo=True)
        assert (echo["addr_id"], echo["addr"], echo["port"], echo["hmac"]) == (5, addr, port, None)
        seg, join = pl.peer.expect("MP_JOIN", tcp_flags="S", timeout=3)
        assert (seg.dst, seg.dport) == (addr, port or 6000)
        assert join["token"] == pl.peer.token
        pl.peer.accept()            # only a join whose third-ACK HMAC verified is accepted
        sock.sendall(b"z" * 100)
        assert pl.peer.recv(100) == b"z" * 100
        pl.expect(MPTcpExtAddAddr=1, MPTcpExtEchoAdd=0, MPTcpExtMPJoinSynAckRx=1)


@covers("3.4-add-addr-hmac")
def test_kernel_ignores_an_add_addr_with_a_bad_hmac(case):
    """An ADD_ADDR whose HMAC does not verify is dropped: no echo, no join. The quiet phase
    (0.5 s) is longer than the kernel takes to echo and join a valid one (~1 ms here).
    RFC 8684 §3.4.1."""
    with peer_lab(case) as pl, pl.kernel_connects():
        pl.peer.add_addr(PEER_V4[1], 5, bad_hmac=True)
        pl.peer.expect_none("ADD_ADDR", within=0.5)
        pl.peer.expect_none("MP_JOIN", within=0.1)
        pl.expect(MPTcpExtAddAddr=0, MPTcpExtEchoAddTx=0, MPTcpExtMPJoinSynTx=0)


@covers("3.4-add-addr-echo")
def test_kernel_echoes_but_does_not_join_when_add_addr_accepted_is_0(case):
    """The echo acknowledges the announcement whatever the receiver then does; with
    add_addr_accepted 0 it opens no subflow (0.5 s of quiet). RFC 8684 §3.4.1."""
    with peer_lab(case, add_addr_accepted=0) as pl, pl.kernel_connects():
        pl.peer.add_addr(PEER_V4[1], 5)
        pl.peer.expect("ADD_ADDR", echo=True, addr_id=5)
        pl.peer.expect_none("MP_JOIN", within=0.5)
        pl.expect(MPTcpExtMPJoinSynTx=0)


@covers("3.4-add-addr-reannounce", "3.4-add-addr-echo")
def test_reannouncing_an_id_with_a_new_port_is_echoed_and_joined(case):
    """The peer announces id 5 as 10.0.2.1:6001 (joined), then id 5 again as 10.0.2.1:6002:
    the kernel echoes the second announcement with the new port and joins it there; the
    subflow to 6001 stays up (recorded: the RFC leaves that to the receiver).
    RFC 8684 §3.4.1."""
    with peer_lab(case) as pl, pl.kernel_connects(ports=(6000, 6001, 6002)):
        pl.peer.add_addr(PEER_V4[1], 5, port=6001)
        first = pl.peer.accept()
        pl.peer.add_addr(PEER_V4[1], 5, port=6002)
        _, echo = pl.peer.expect("ADD_ADDR", echo=True, port=6002)
        assert echo["addr_id"] == 5
        seg, _ = pl.peer.expect("MP_JOIN", tcp_flags="S", where=lambda s, o: s.dport == 6002)
        pl.peer.accept()
        assert not any(set("RF") & set(s.tcp_flags) for s in pl.peer.segments
                       if s.dport == first.sport and s.sport == first.dport)
        pl.expect(MPTcpExtAddAddr=2, MPTcpExtMPJoinSynAckRx=2)


@covers("3.4-mixed-families")
def test_ipv6_address_announced_on_a_v4_mapped_connection_is_joined(case):
    """The kernel's IPv6 socket connects to the peer's IPv4 address as ::ffff:10.0.1.1 (an
    IPv4 subflow); the peer announces an IPv6 address: the kernel joins it over IPv6 and
    data flows on the IPv6 subflow of that connection (mptcp_join.sh's "mixed" group).
    RFC 8684 §3.4.1."""
    with peer_lab(case) as pl, pl.kernel_connects(socket.AF_INET6,
                                                  dst=f"::ffff:{PEER_V4[0]}") as sock:
        assert pl.peer.subflows[0].src == PEER_V4[0]          # the first subflow is IPv4
        pl.peer.add_addr(PEER_V6[1], 6)
        seg, _ = pl.peer.expect("MP_JOIN", tcp_flags="S")
        assert seg.dst == PEER_V6[1]
        joined = pl.peer.accept()
        pl.peer.mp_prio(True, pl.peer.subflows[0])      # only the IPv6 subflow is regular
        wait_counter(pl.kernel, pl.before, "MPTcpExtMPPrioRx", at_least=1)
        since = len(pl.peer.segments)
        sock.sendall(b"6" * 20_000)
        assert pl.peer.recv(20_000) == b"6" * 20_000
        v6 = sum(s.payload_len for s in pl.peer.segments[since:] if s.dst == PEER_V6[1])
        assert v6 == 20_000 and joined.src == PEER_V6[1], v6
        pl.expect(MPTcpExtMPJoinSynAckRx=1)


# -- REMOVE_ADDR from the peer ------------------------------------------------------------------------

@covers("3.4-remove-addr")
def test_remove_addr_closes_the_subflows_on_that_address(case):
    """REMOVE_ADDR makes the receiver close every subflow using that address id (a RST or
    FIN on it); the connection goes on over the others. RFC 8684 §3.4.2."""
    with peer_lab(case) as pl, pl.connected() as conn:
        second = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        assert second.state == "established"
        pl.peer.remove_addr(2)
        pl.peer.expect(where=lambda s, o: s.dport == second.sport and
                       bool(set("RF") & set(s.tcp_flags)), timeout=3)
        pl.peer.send(b"still here")
        assert read_for(conn, 10) == b"still here"
        # the kernel counts each subflow it closes for a received REMOVE_ADDR as RmAddr;
        # RmSubflow counts removals its own path manager decides
        pl.expect(MPTcpExtRmAddr=1, MPTcpExtRmSubflow=0)


@covers("3.4-remove-addr-list")
def test_one_remove_addr_listing_two_ids_closes_both(case):
    """The peer joined twice (address ids 2 and 3) and sends one REMOVE_ADDR listing both:
    the kernel closes both subflows; the first one still carries data. RFC 8684 §3.4.2."""
    with peer_lab(case) as pl, pl.connected() as conn:
        two = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        three = pl.peer.join(KERNEL_V4[1], PORT, addr_id=3)
        pl.peer.remove_addr(2, 3)
        for sf in (two, three):
            pl.peer.expect(where=lambda s, o, p=sf.sport: s.dport == p and
                           bool(set("RF") & set(s.tcp_flags)), timeout=3)
        pl.peer.send(b"one left")
        assert read_for(conn, 8) == b"one left"
        pl.expect(MPTcpExtRmAddr=2)


@covers("3.4-remove-addr-unknown")
def test_remove_addr_of_an_unknown_id_removes_nothing(case):
    """A REMOVE_ADDR naming id 9, which no subflow uses: nothing is closed (0.5 s of quiet)
    and the joined subflow keeps carrying data. RFC 8684 §3.4.2."""
    with peer_lab(case) as pl, pl.connected() as conn:
        two = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.remove_addr(9)
        pl.peer.expect_none(where=lambda s, o: bool(set("RF") & set(s.tcp_flags)), within=0.5)
        pl.peer.send(b"two", two)
        assert read_for(conn, 3) == b"two"
        pl.expect(MPTcpExtRmAddr=1)     # this kernel counts the id it received, used or not


# -- MP_FASTCLOSE ---------------------------------------------------------------------------------------

@covers("3.5-fastclose")
def test_fastclose_resets_every_subflow_and_the_application_sees_it(case):
    """MP_FASTCLOSE with the receiver's key on an ACK: RSTs on all subflows, and the
    application's next read fails with a connection reset. RFC 8684 §3.5."""
    with peer_lab(case) as pl, pl.connected() as conn:
        second = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.fastclose()
        for sf in (pl.peer.subflows[0], second):
            pl.peer.expect(tcp_flags="R", where=lambda s, o, p=sf.sport: s.dport == p, timeout=3)
        with pytest.raises(ConnectionResetError):
            conn.recv(10)
        pl.expect(MPTcpExtMPFastcloseRx=1)


@covers("3.5-fastclose-rst")
def test_fastclose_on_a_rst_closes_the_connection(case):
    """The other form: MP_FASTCLOSE on a RST. The peer resets only its first subflow that
    way: the whole connection closes (the kernel resets the joined subflow too) and the
    application sees the reset. RFC 8684 §3.5."""
    with peer_lab(case) as pl, pl.connected() as conn:
        second = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.reset(pl.peer.subflows[0], MPFastclose(receiver_key=pl.peer.remote_key))
        with pytest.raises(ConnectionResetError):
            conn.recv(10)
        pl.peer.expect(tcp_flags="R", where=lambda s, o: s.dport == second.sport, timeout=3)
        pl.expect(MPTcpExtMPFastcloseRx=1)


@covers("3.5-fastclose-key", "3.6-tcprst-one-subflow")
def test_rst_with_a_wrong_key_fastclose_closes_only_that_subflow(case):
    """MP_FASTCLOSE with a wrong key on a RST: the RST still closes that subflow, as a plain
    RST would, but not the connection: data still arrives over the other subflow and nothing
    counts a fast close. RFC 8684 §3.5."""
    with peer_lab(case) as pl, pl.connected() as conn:
        second = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.reset(pl.peer.subflows[0], MPFastclose(receiver_key=pl.peer.remote_key ^ 1))
        wait_for(lambda: _kernel_subflows(pl, PEER_V4[0]) == 0, what="the first subflow closed")
        pl.peer.send(b"alive", second)
        assert read_for(conn, 5) == b"alive"
        pl.expect(MPTcpExtMPFastcloseRx=0)


@covers("3.5-fastclose-key")
def test_fastclose_with_a_wrong_key_is_ignored(case):
    """MP_FASTCLOSE carrying any other key closes nothing: no RST within 0.5 s, and data
    still arrives. RFC 8684 §3.5."""
    with peer_lab(case) as pl, pl.connected() as conn:
        pl.peer.ack(None, MPFastclose(receiver_key=pl.peer.remote_key ^ 1))
        pl.peer.expect_none(tcp_flags="R", within=0.5)
        pl.peer.send(b"alive")
        assert read_for(conn, 5) == b"alive"
        pl.expect(MPTcpExtMPFastcloseRx=0)


# -- MP_TCPRST ---------------------------------------------------------------------------------------------

@covers("3.6-tcprst-one-subflow")
def test_rst_with_mp_tcprst_on_one_subflow_closes_only_that_one(case):
    """The peer resets its joined subflow with MP_TCPRST (reason "unacceptable
    performance"): the kernel counts it, closes that subflow only, and the connection goes
    on over the first. RFC 8684 §3.6."""
    with peer_lab(case) as pl, pl.connected() as conn:
        two = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        wait_for(lambda: _kernel_subflows(pl, PEER_V4[1]) == 1, what="the joined subflow")
        pl.peer.reset(two, MPTcpRst(reason=5))
        wait_for(lambda: _kernel_subflows(pl, PEER_V4[1]) == 0, what="the joined subflow gone")
        pl.peer.send(b"first still")
        assert read_for(conn, 11) == b"first still"
        conn.sendall(b"back")
        assert pl.peer.recv(4) == b"back"
        pl.expect(MPTcpExtMPRstRx=1, MPTcpExtMPFastcloseRx=0)


@covers("3.6-tcprst-needs-rst")
def test_mp_tcprst_on_an_ack_closes_nothing(case):
    """MP_TCPRST on a segment without the RST flag is meaningless: the kernel does not count
    it as a reset and the subflow carries on. RFC 8684 §3.6."""
    with peer_lab(case) as pl, pl.connected() as conn:
        two = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.ack(two, MPTcpRst(reason=1))
        pl.peer.expect_none(tcp_flags="R", within=0.3)
        pl.peer.send(b"on two", two)
        assert read_for(conn, 6) == b"on two"
        assert _kernel_subflows(pl, PEER_V4[1]) == 1
        pl.expect(MPTcpExtMPRstRx=0)


@pytest.mark.parametrize("transient", [False, True], ids=["permanent", "transient"])
@covers("3.6-transient")
def test_reset_subflow_is_not_reopened(case, transient):
    """The kernel joined the address the peer announced; the peer resets that subflow with
    MP_TCPRST T=0 (permanent) or T=1 (transient): the kernel does not open it again within
    0.6 s (several RTOs) — for T=0 what the RFC asks; for T=1 a retry would be allowed and
    this kernel makes none (recorded). RFC 8684 §3.6."""
    with peer_lab(case) as pl, pl.kernel_connects(ports=(6000, 6001)) as sock:
        pl.peer.add_addr(PEER_V4[1], 2, port=6001)
        pl.peer.expect("MP_JOIN", tcp_flags="S")
        joined = pl.peer.accept()
        pl.peer.reset(joined, MPTcpRst(flags="T" if transient else 0, reason=5))
        pl.peer.expect_none("MP_JOIN", tcp_flags="S", within=0.6)
        sock.sendall(b"x" * 100)
        assert pl.peer.recv(100) == b"x" * 100
        pl.expect(MPTcpExtMPRstRx=1, MPTcpExtMPJoinSynTx=1)


# -- across §3: TCP first, reserved bits ----------------------------------------------------------------

@pytest.mark.parametrize("signal", ["fastclose", "add_addr", "rst"])
@covers("3-tcp-valid")
def test_signals_on_out_of_window_segments_are_ignored(case, signal):
    """The peer sends MP_FASTCLOSE (right key) or a valid ADD_ADDR on a segment whose
    sequence number is 1 MB outside the window, or a RST with MP_TCPRST there: TCP drops the
    segment before MPTCP sees it: no reset, no echo, the connection unchanged.
    RFC 8684 §3 (options are processed only on segments TCP accepts)."""
    with peer_lab(case) as pl, pl.connected() as conn:
        sf = pl.peer.subflows[0]
        far = sf.snd_nxt + 1_000_000
        if signal == "fastclose":
            pl.peer.transmit(sf, ACK, [MPFastclose(receiver_key=pl.peer.remote_key)], seq=far)
        elif signal == "add_addr":
            opt = craft.add_addr(sender_key=pl.peer.key, receiver_key=pl.peer.remote_key,
                                 addr_id=7, addr=PEER_V4[1])
            pl.peer.transmit(sf, ACK, [opt], seq=far)
        else:
            pl.peer.transmit(sf, RST | ACK, [MPTcpRst(reason=1)], seq=far)
        pl.peer.expect_none(where=lambda s, o: "R" in s.tcp_flags or
                            o.get("subtype") == "ADD_ADDR", within=0.3)
        pl.peer.send(b"in window")
        assert read_for(conn, 9) == b"in window"
        pl.expect(MPTcpExtMPFastcloseRx=0, MPTcpExtAddAddr=0, MPTcpExtMPRstRx=0)


@covers("3-reserved-recv")
def test_reserved_bits_set_by_the_peer_are_ignored(case):
    """The peer sets every reserved bit it can: in its DSS mappings, its ADD_ADDR, its
    REMOVE_ADDR and MP_PRIO: the kernel delivers the data, echoes and joins the address,
    applies the priority and removes the subflow, as if the bits were zero. RFC 8684 §3."""
    with peer_lab(case) as pl, pl.kernel_connects(ports=(6000, 6001)) as sock:
        first = pl.peer.subflows[0]
        dss = pl.peer._dss(mapping=(pl.peer.snd_dsn, first.ssn, 5), payload=b"rsrvd")
        dss.reserved = 0x7F
        pl.peer.transmit(first, ACK | PSH, [dss], b"rsrvd")
        pl.peer.snd_dsn += 5
        assert sock.recv(5) == b"rsrvd"
        add = craft.add_addr(sender_key=pl.peer.key, receiver_key=pl.peer.remote_key,
                             addr_id=2, addr=PEER_V4[1], port=6001)
        add.reserved = 0x7
        pl.peer.announced[PEER_V4[1]] = 2           # the id its join SYN-ACK will carry
        pl.peer.ack(first, add)
        _, echo = pl.peer.expect("ADD_ADDR", echo=True)
        joined = pl.peer.accept()
        prio = MPPrio(flags=0)            # first subflow: stays regular, the kernel counts it
        prio.reserved = 0x7
        pl.peer.ack(first, prio)
        wait_counter(pl.kernel, pl.before, "MPTcpExtMPPrioRx", at_least=1)
        remove = MPRemoveAddr(addr_ids=[2])
        remove.reserved = 0xF
        pl.peer.ack(first, remove)
        pl.peer.expect(where=lambda s, o: s.sport == joined.dport and
                       bool(set("RF") & set(s.tcp_flags)), timeout=3)
        pl.expect(MPTcpExtAddAddr=1, MPTcpExtMPPrioRx=1, MPTcpExtRmAddr=1)
