"""MP_CAPABLE against the Scapy peer: versions, flags, the third ACK, the listener's side, and
what the kernel as initiator does with odd SYN-ACKs (RFC 8684 §3.1).

The peer ("client", 10.0.x.1) faces the kernel ("server", 10.0.x.2); see support.peer_lab.
"""

from __future__ import annotations

import socket

import pytest
from support import KERNEL_V4, PEER_V4, covers, peer_lab, read_for, wait_for

from mptcplab.layers import craft
from mptcplab.peer import ACK, PSH
from mptcplab.sockopt import is_fallback

# MP_CAPABLE flag bits (RFC 8684 Figure 4): A checksum, B extensibility, C no more subflows to
# this address, D-H crypto (H = HMAC-SHA256)
A, B, C, E, H = 0x80, 0x40, 0x20, 0x08, 0x01


def _mpc(seg):
    return next((o for o in seg.options if o["subtype"] == "MP_CAPABLE"), None)


@covers("3.1-version-lower")
def test_syn_offering_version_2_is_answered_with_version_1(case):
    """A SYN offering MPTCP version 2: the v1 kernel answers with its own, lower version
    and the connection is MPTCP v1. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(syn={"version": 2}) as conn:
        synack = _mpc(pl.peer.synack)
        assert synack is not None and synack["version"] == 1, pl.peer.synack
        assert not is_fallback(conn)
        pl.peer.send(b"v2 asked, v1 given")
        assert read_for(conn, 18) == b"v2 asked, v1 given"
        pl.expect(MPTcpExtMPCapableSYNRX=1, MPTcpExtMPCapableACKRX=1)


@pytest.mark.parametrize("flags", [
    pytest.param(B | H, id="B-set", marks=covers("3.1-b-flag-recv")),
    pytest.param(0, id="no-crypto", marks=covers("3.1-no-crypto"))])
def test_syn_with_b_flag_or_no_crypto_bit_is_plain_tcp(case, flags):
    """An MP_CAPABLE SYN with the extensibility flag B set (not understood by a v1 host), or
    with no crypto algorithm bit at all, is ignored: the SYN-ACK carries no MP_CAPABLE and
    the connection is plain TCP. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(syn={"flags": flags}) as conn:
        assert _mpc(pl.peer.synack) is None and pl.peer.fallback
        pl.peer.transmit(pl.peer.subflows[0], ACK | PSH, payload=b"tcp")
        assert read_for(conn, 3) == b"tcp"
        assert is_fallback(conn)
        pl.expect(MPTcpExtMPCapableSYNRX=0, MPTcpExtMPCapableACKRX=0)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Linux 6.18 ignores an MP_CAPABLE SYN with H and E set (HMAC-SHA256 and an unassigned "
    "algorithm): the SYN-ACK carries no MP_CAPABLE and the connection is plain TCP, where "
    "choosing H, the one algorithm it has, was possible (its parser wants the D-H bits to "
    "equal exactly H)"))
@covers("3.1-crypto-choice")
def test_syn_offering_two_crypto_algorithms_gets_hmac_sha256(case):
    """A SYN offering HMAC-SHA256 (H) and another algorithm (E): the listener picks one it
    supports and answers with H alone. RFC 8684 §3.1 (the crypto bits negotiate like the
    checksum bit)."""
    with peer_lab(case) as pl, pl.connected(syn={"flags": H | E}):
        synack = _mpc(pl.peer.synack)
        assert synack is not None, "SYN-ACK without MP_CAPABLE: the kernel fell back"
        assert synack["flags"] == "H"


@covers("3.1-crypto-choice")
def test_syn_offering_two_crypto_algorithms_observed_plain_tcp(case):
    """What this kernel does with H+E offered (see the deviation above): plain TCP, counted
    nowhere, the connection working. Fails when the kernel starts choosing H. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(syn={"flags": H | E}) as conn:
        assert _mpc(pl.peer.synack) is None
        assert is_fallback(conn)
        pl.expect(MPTcpExtMPCapableSYNRX=0)


@covers("3.1-plain-syn")
def test_plain_syn_gets_no_mp_capable(case):
    """A SYN without MP_CAPABLE to an MPTCP listener gets a SYN-ACK without it: MPTCP is
    offered only to those who ask. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(syn=None) as conn:
        assert pl.peer.synack.options == []
        assert is_fallback(conn)
        pl.expect(MPTcpExtMPCapableSYNRX=0)


@pytest.mark.parametrize("third_ack", [None, {"flags": B | H}, {"flags": 0}],
                         ids=["missing", "B-set", "no-crypto"])
@covers("3.1-third-ack-invalid")
def test_invalid_third_ack_makes_the_listener_fall_back(case, third_ack):
    """The third ACK arrives without MP_CAPABLE, or with an MP_CAPABLE that is invalid (B
    set, no crypto bit): the listener treats the connection as plain TCP (data without
    MPTCP options is delivered, its own segments carry none). RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(third_ack=third_ack) as conn:
        mark = len(pl.peer.segments)
        pl.peer.transmit(pl.peer.subflows[0], ACK | PSH, payload=b"plain")
        assert read_for(conn, 5) == b"plain"
        conn.sendall(b"back")
        seg, _ = pl.peer.expect(where=lambda s, o: s.payload_len == 4)
        assert is_fallback(conn) and seg.options == []
        assert all(not s.options for s in pl.peer.segments[mark:])
        pl.expect(MPTcpExtMPCapableSYNRX=1, MPTcpExtMPCapableACKRX=0,
                  MPTcpExtMPCapableFallbackACK=1)


def test_third_ack_with_a_wrong_echoed_key_is_accepted(case):     # recorded, no requirement
    """A third ACK echoing a key the listener never sent: the kernel, which kept its own key,
    does not check the echo and goes on as MPTCP with the keys it knows (its Data ACKs follow
    its own key's IDSN). Recorded behaviour: the RFC lets a listener that keeps state use its
    own copy. RFC 8684 §3.1."""
    def wrong(opt):
        opt.receiver_key ^= 1
        return opt

    with peer_lab(case) as pl, pl.connected(third_ack=wrong) as conn:
        assert not is_fallback(conn)
        pl.peer.send(b"k" * 100)
        assert read_for(conn, 100) == b"k" * 100
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == pl.peer.snd_dsn)
        pl.expect(MPTcpExtMPCapableACKRX=1, MPTcpExtMPCapableFallbackACK=0)


@covers("3.1-key-random")
def test_keys_and_tokens_differ_between_connections(case):
    """Two connections from the same peer: the kernel picks a new key (so a new token) each
    time. RFC 8684 §3.1."""
    with peer_lab(case) as pl:
        lst = pl.listener()
        keys = []
        for _ in range(3):
            pl.peer.connect(KERNEL_V4[0], 5000)
            conn, _ = lst.accept()
            keys.append(_mpc(pl.peer.synack)["sender_key"])
            conn.close()
        assert len(set(keys)) == 3, [hex(k) for k in keys]
        pl.expect(MPTcpExtMPCapableACKRX=3)


# -- the kernel as initiator -------------------------------------------------------------------

@pytest.mark.parametrize("synack", [
    pytest.param({"version": 2}, id="v2", marks=covers("3.1-version-fallback")),
    pytest.param(craft.capable(0, sender_key=0x1122334455667788), id="v0",
                 marks=covers("3.1-version-fallback")),
    pytest.param({"flags": B | H}, id="B-set", marks=covers("3.1-b-flag-recv")),
    pytest.param({"flags": 0}, id="no-crypto", marks=covers("3.1-no-crypto")),
    pytest.param(None, id="missing", marks=covers("3.1-synack-stripped"))])
def test_odd_synack_makes_the_kernel_fall_back(case, synack):
    """The kernel connects; the peer's SYN-ACK has MP_CAPABLE of another version (2, or v0
    with its key), with B set, with no crypto bit, or none at all: the kernel continues as
    plain TCP: no MP_CAPABLE on its ACK, no MPTCP option on its data. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.kernel_connects(synack=synack) as sock:
        sock.sendall(b"fallback")
        seg, _ = pl.peer.expect(where=lambda s, o: s.payload_len == 8)
        assert seg.options == [] and is_fallback(sock)
        third = [s for s in pl.peer.segments if s.tcp_flags == "A" and not s.payload_len]
        assert third and all(not s.options for s in third)
        pl.expect(MPTcpExtMPCapableSYNTX=1, MPTcpExtMPCapableSYNACKRX=0,
                  MPTcpExtMPCapableFallbackSYNACK=1)


@covers("3.1-syn-form", "3.1-mpc-until-dss")
def test_mp_capable_rides_on_data_until_a_dss_comes_back(case):
    """The kernel connects and sends; the peer acknowledges nothing: the kernel's first data
    carries MP_CAPABLE with both keys and the data length, and so does every retransmission
    of it (the third ACK may have been lost). Once the peer answers with a DSS the kernel
    switches to DSS. Waits for two retransmissions (~0.2 s + 0.4 s, the RTO backing off from
    the 200 ms minimum). RFC 8684 §3.1."""
    with peer_lab(case, auto_ack=False) as pl, pl.kernel_connects() as sock:
        sock.sendall(b"m" * 100)
        firsts = [pl.peer.expect(where=lambda s, o: s.payload_len == 100, timeout=3)[0]
                  for _ in range(3)]
        for seg in firsts:
            mpc = _mpc(seg)
            assert mpc is not None and mpc["data_level_len"] == 100, seg
            assert mpc["receiver_key"] == pl.peer.key
        assert firsts[0].seq == firsts[1].seq == firsts[2].seq
        pl.peer.auto_ack = True
        pl.peer.ack(pl.peer.subflows[0])
        sock.sendall(b"n" * 50)
        seg, _ = pl.peer.expect(where=lambda s, o: s.payload_len == 50)
        assert _mpc(seg) is None
        assert any(o["subtype"] == "DSS" and "dsn" in o for o in seg.options), seg


@covers("3.1-mpc-data-no-dss")
def test_first_data_acked_without_dss_makes_the_kernel_fall_back(case):
    """The peer acknowledges the kernel's first data at the TCP level only (no DSS): the path
    ate MPTCP, so the kernel falls back; its following data carries no option. RFC 8684
    §3.1, §3.7."""
    with peer_lab(case, withhold={"dss"}) as pl, pl.kernel_connects() as sock:
        sock.sendall(b"a" * 100)
        first, _ = pl.peer.expect(where=lambda s, o: s.payload_len == 100)
        assert _mpc(first) is not None
        wait_for(lambda: is_fallback(sock), what="the kernel's socket to fall back")
        sock.sendall(b"b" * 60)
        later, _ = pl.peer.expect(where=lambda s, o: s.payload_len == 60)
        assert later.options == []
        pl.expect(MPTcpExtMPCapableDataFallback=1)


@covers("3.1-join-after-dss")
def test_no_mp_join_before_a_dss_came_back(case):
    """The kernel has a subflow endpoint (10.0.2.2): while the peer has sent no DSS the
    kernel opens no second subflow; the peer's first data (with a DSS) releases the MP_JOIN.
    The quiet phase is 0.5 s, more than the kernel needs to join once allowed (~1 ms here).
    RFC 8684 §3.1, §3.2."""
    with peer_lab(case, kernel_endpoints=((KERNEL_V4[1], ("subflow",)),)) as pl, \
            pl.kernel_connects():
        pl.peer.expect_none("MP_JOIN", within=0.5)
        pl.peer.send(b"now you know")
        seg, join = pl.peer.expect("MP_JOIN", tcp_flags="S")
        assert seg.src == KERNEL_V4[1] and join["token"] == pl.peer.token
        pl.expect(MPTcpExtMPJoinSynTx=1)


@covers("3.1-c-flag-recv")
def test_c_flag_stops_joins_to_the_initial_address(case):
    """The peer's SYN-ACK sets C (no more subflows to this address and port): the kernel,
    which has a subflow endpoint and would otherwise join 10.0.1.1:6000 from 10.0.2.2 (see
    test_no_mp_join_before_a_dss_came_back), opens no subflow there; an address the peer
    then announces is joined. RFC 8684 §3.1."""
    with peer_lab(case, kernel_endpoints=((KERNEL_V4[1], ("subflow",)),)) as pl, \
            pl.kernel_connects(ports=(6000, 6001), synack={"flags": C | H}):
        pl.peer.send(b"fully established")
        pl.peer.expect_none("MP_JOIN", within=0.5)
        pl.peer.add_addr(PEER_V4[1], 2, port=6001)
        seg, _ = pl.peer.expect("MP_JOIN", tcp_flags="S")
        assert (seg.dst, seg.dport) == (PEER_V4[1], 6001)
        pl.expect(MPTcpExtMPJoinSynTx=1)


@covers("3.1-checksum-negotiation", "3.3-checksum-verify")
def test_peer_asking_for_checksums_makes_the_kernel_use_them(case):
    """The kernel has checksum_enabled=0 and only the peer sets A: DSS checksums are used in
    both directions, and every checksum verifies (at least one mapping is checked, its bytes
    gathered from every segment it spans). RFC 8684 §3.1, §3.3.1."""
    from mptcplab.facts import checksum_report

    with peer_lab(case, kernel_mptcp={"checksum_enabled": 0}, checksum=True) as pl, \
            pl.connected() as conn:
        conn.sendall(b"k" * 6000)
        assert pl.peer.recv(6000) == b"k" * 6000
        maps = [(s, o) for s in pl.peer.segments for o in s.options
                if o["subtype"] == "DSS" and "dsn" in o and s.payload_len]
        assert maps and all("checksum" in o for _, o in maps), maps
        # mappings reassembled across segments (6.12 and 6.1 map up to 64 KB at once)
        report = checksum_report(pl.peer.segments)
        case.note("checksums", str(report))
        assert report.verified and not report.failures, report
        pl.peer.send(b"p" * 3000)
        assert read_for(conn, 3000) == b"p" * 3000
        pl.expect(MPTcpExtDataCsumErr=0)


@covers("3.1-v0-fallback")
def test_kernel_answers_a_v0_syn_as_plain_tcp(case):
    """A version 0 SYN (RFC 6824, key in the SYN): this v1-only kernel answers without
    MP_CAPABLE and the connection goes on as TCP. RFC 8684 §3.1."""
    with peer_lab(case, version=0) as pl, pl.connected() as conn:
        assert pl.peer.fallback and _mpc(pl.peer.synack) is None
        pl.peer.transmit(pl.peer.subflows[0], ACK | PSH, payload=b"plain tcp")
        assert read_for(conn, 9) == b"plain tcp"
        pl.expect(MPTcpExtMPCapableSYNRX=0, MPTcpExtMPCapableACKRX=0)


@covers("3.1-syn-form")
def test_kernel_as_listener_sends_its_key_in_the_synack_only(case):
    """The kernel's SYN-ACK carries exactly its key (12 bytes, H set, B clear); the peer's
    third ACK echoes it and the kernel's Data ACKs count from the peer's IDSN. RFC 8684 §3.1."""
    with peer_lab(case) as pl, pl.connected(socket.AF_INET6) as conn:
        synack = _mpc(pl.peer.synack)
        assert (synack["length"], synack["flags"], synack["version"]) == (12, "H", 1)
        pl.peer.send(b"six")
        assert read_for(conn, 3) == b"six"
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == pl.peer.snd_dsn)
