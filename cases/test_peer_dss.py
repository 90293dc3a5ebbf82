"""Data sequence signals against the Scapy peer: 32-bit DSNs and their wrap, checksums that
were (not) negotiated, duplicates, holes before a DATA_FIN, DATA_FIN retransmission, data
without a mapping, out-of-window data, MP_FAIL. RFC 8684 §3.3 and §3.7.
"""

from __future__ import annotations

import os
import random
import re
import socket

import pytest
from support import KERNEL_V4, PORT, covers, needs, peer_lab, read_for, wait_for

from mptcplab import crypto
from mptcplab.peer import ACK, PSH
from mptcplab.sockopt import is_fallback

U32 = (1 << 32) - 1


def _key_near_wrap(room: int, *, seed: int = 8684) -> int:
    """A key whose IDSN + 1 has its low 32 bits within `room` bytes of wrapping."""
    rng = random.Random(seed)
    while True:
        key = rng.getrandbits(64)
        start = (crypto.key_idsn(key) + 1) & U32
        if U32 - room < start < U32 - room // 4:
            return key


@covers("3.3-dsn32")
def test_32_bit_dsns_and_data_acks_both_ways(case):
    """The peer maps its data with 4-byte DSNs and acknowledges with 4-byte Data ACKs: the
    kernel delivers every byte in order and takes the short Data ACKs (its data is all
    acknowledged: nothing left unacked after 60 kB). RFC 8684 §3.3."""
    up, down = os.urandom(60_000), os.urandom(60_000)
    with peer_lab(case, dsn32=True, ack32=True) as pl, pl.connected() as conn:
        pl.peer.send(up)
        assert read_for(conn, len(up), 3) == up
        dss = [o for s in pl.peer.segments for o in s.options if o["subtype"] == "DSS"]
        conn.sendall(down)
        assert pl.peer.recv(len(down)) == down
        sent = [o for o in dss if "data_ack" in o]
        assert sent, "the kernel sent no Data ACK"
        pl.peer.ack()
        wait_for(lambda: pl.kernel.call(_unacked, conn) == 0, what="all kernel data acked")


def _unacked(sock) -> int:
    import fcntl
    import struct
    buf = fcntl.ioctl(sock.fileno(), 0x5411, struct.pack("i", 0))   # SIOCOUTQ
    return struct.unpack("i", buf)[0]


@covers("3.3-dsn32-wrap")
def test_32_bit_dsns_across_a_wrap_of_the_low_32_bits(case):
    """The peer's key puts its data sequence numbers 7-30 kB before a wrap of the low 32
    bits, and it sends 50 kB (within the kernel's receive window: the peer does not wait
    for window updates) with 4-byte DSNs: the kernel expands them across the wrap, delivers
    every byte in order, and its (64-bit) Data ACK ends past the wrap. RFC 8684 §3.3."""
    key = _key_near_wrap(30_000)
    data = os.urandom(50_000)
    with peer_lab(case, dsn32=True, key=key) as pl, pl.connected() as conn:
        start = pl.peer.snd_dsn
        pl.peer.send(data)
        assert read_for(conn, len(data), 3) == data
        end = (start + len(data)) & ((1 << 64) - 1)
        assert end >> 32 == (start >> 32) + 1, "the data does not cross a wrap"
        # the kernel answers 4-byte DSNs with 4-byte Data ACKs: the low 32 bits past the wrap
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") in (end, end & U32),
                       timeout=3)


@pytest.mark.parametrize("negotiated", [
    pytest.param(False, id="unexpected", marks=covers("3.3-checksum-unexpected")),
    pytest.param(True, id="absent", marks=covers("3.3-checksum-absent"))])
@covers("3.6-tcprst-reason")
def test_checksum_mismatch_on_a_joined_subflow_is_reset(case, negotiated):
    """On a joined subflow the peer sends a DSS mapping with a checksum although none was
    negotiated, or without one although checksums were: the kernel resets that subflow (RST
    with MP_TCPRST) and does not deliver the data. RFC 8684 §3.3."""
    with peer_lab(case, kernel_mptcp={"checksum_enabled": int(negotiated)},
                  checksum=negotiated) as pl, pl.connected() as conn:
        pl.peer.send(b"a" * 300)
        assert read_for(conn, 300) == b"a" * 300
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.send(b"b" * 100, sf, checksum=not negotiated)
        _, rst = pl.peer.expect("MP_TCPRST", tcp_flags="R", where=lambda s, o: s.dport == sf.sport)
        assert read_for(conn, 100, 0.3) == b""
        pl.expect(MPTcpExtMPRstTx=1)


def _checksum_mismatch_on_the_only_subflow(case, negotiated: bool):
    with peer_lab(case, kernel_mptcp={"checksum_enabled": int(negotiated)},
                  checksum=negotiated) as pl, pl.connected() as conn:
        for _ in range(3):
            pl.peer.send(b"a" * 100)
        assert read_for(conn, 300) == b"a" * 300
        mark = len(pl.peer.segments)
        pl.peer.send(b"b" * 100, checksum=not negotiated)
        return read_for(conn, 100, 0.5), pl.peer.segments[mark:], is_fallback(conn), \
            (pl.kernel.counters() - pl.before)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Linux 6.18: on the initial (only) subflow a DSS whose checksum presence differs from "
    "what was negotiated makes the kernel fall back to TCP (DssFallback=1) and deliver the "
    "data; no RST. On a joined subflow it resets as asked."))
@pytest.mark.parametrize("negotiated", [
    pytest.param(False, id="unexpected", marks=covers("3.3-checksum-unexpected")),
    pytest.param(True, id="absent", marks=covers("3.3-checksum-absent"))])
def test_checksum_mismatch_on_the_only_subflow_is_reset(case, negotiated):
    """The same mismatch on the connection's only subflow: the receiver closes the subflow
    with a RST (the RFC makes no exception for the initial subflow). RFC 8684 §3.3."""
    read, after, _, _ = _checksum_mismatch_on_the_only_subflow(case, negotiated)
    assert any("R" in s.tcp_flags for s in after), "no RST"
    assert read == b""


@pytest.mark.parametrize("negotiated", [
    pytest.param(False, id="unexpected", marks=covers("3.3-checksum-unexpected")),
    pytest.param(True, id="absent", marks=covers("3.3-checksum-absent"))])
def test_checksum_mismatch_on_the_only_subflow_observed_fallback(case, negotiated):
    """What this kernel does instead (the deviation above): falls back to TCP, counts
    DssFallback, delivers the 100 bytes and sends no RST. Fails when the kernel changes
    either way. RFC 8684 §3.3."""
    read, after, fallback, delta = _checksum_mismatch_on_the_only_subflow(case, negotiated)
    assert read == b"b" * 100 and fallback
    assert not any("R" in s.tcp_flags for s in after)
    assert delta["MPTcpExtDssFallback"] == 1 and delta["MPTcpExtMPRstTx"] == 0


@covers("3.3-duplicate", "3.2-join-data")
def test_the_same_data_on_two_subflows_is_delivered_once(case):
    """The peer sends 1000 bytes on the first subflow and the same mapping (same DSN) again
    on the joined one, then 10 more: the application reads the 1010 bytes once, in order.
    RFC 8684 §3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        sf2 = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        dsn = pl.peer.snd_dsn
        pl.peer.send(b"1" * 1000)
        pl.peer.send(b"1" * 1000, sf2, dsn=dsn)
        pl.peer.send(b"2" * 10)
        assert read_for(conn, 2010, 0.5) == b"1" * 1000 + b"2" * 10
        pl.expect(MPTcpExtDuplicateData=1)


@covers("3.3-data-fin-hole", "3.3-data-fin")
def test_data_fin_after_a_hole_waits_for_the_missing_data(case):
    """The peer leaves a 100-byte hole in the data stream, sends what follows and its
    DATA_FIN on the second subflow: the kernel neither ends the stream nor acknowledges the
    DATA_FIN; once the hole is filled the application reads everything, then end of file,
    and the Data ACK covers the DATA_FIN. RFC 8684 §3.3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        sf2 = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.send(b"x" * 10)
        assert read_for(conn, 10) == b"x" * 10
        hole = pl.peer.snd_dsn
        pl.peer.snd_dsn += 100
        pl.peer.send(b"y" * 50, sf2)
        fin_dsn = pl.peer.snd_dsn
        pl.peer.data_fin(sf2)
        assert read_for(conn, 150, 0.4) == b""
        acks = [o["data_ack"] for s in pl.peer.segments for o in s.options
                if o["subtype"] == "DSS" and "data_ack" in o]
        assert max(acks) == hole, (hex(max(acks)), hex(hole))
        pl.peer.send(b"h" * 100, dsn=hole)
        assert read_for(conn, 150) == b"h" * 100 + b"y" * 50
        assert conn.recv(10) == b""
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == fin_dsn + 1)


@pytest.mark.slow
@needs("ss")
@covers("3.3-data-fin-retransmit")
def test_unacknowledged_data_fin_is_retransmitted_with_backoff(case):
    """The kernel ends its stream; the peer acknowledges every segment but never the
    DATA_FIN itself (its Data ACK stops one short): the kernel sends the same DATA_FIN again
    and again, its retransmission timer backing off (seen: a few copies within ~10 ms with
    its ACKs, then after 0.42 s and 0.83 s more, for an RTO of 416 ms). With back-off the
    second timer-driven copy comes ~3 RTOs after the first DATA_FIN, without it 2: the case
    wants at least 2.5 (a loaded machine only makes timers late). Waits ~1.3 s.
    RFC 8684 §3.3.3."""
    def data_fins():
        return [s for s in pl.peer.segments
                if any(o["subtype"] == "DSS" and o["data_fin"] for o in s.options)]

    def timer_driven():
        fins = data_fins()
        return [b for a, b in zip(fins, fins[1:]) if b.time - a.time >= 0.15]

    with peer_lab(case) as pl, pl.connected() as conn:
        pl.peer.ack_data_fin = False
        conn.sendall(b"bye")
        assert pl.peer.recv(3) == b"bye"
        out = pl.kernel.run(["ss", "-tinH", "state", "established", "( sport = :5000 )"]).stdout
        rto = float(re.search(r"\brto:([\d.]+)", out).group(1)) / 1000
        conn.shutdown(socket.SHUT_WR)
        late = wait_for(lambda: (t := timer_driven()) and len(t) >= 2 and t,
                        what="two timer-driven retransmissions of the DATA_FIN", timeout=6)
        first = data_fins()[0].time
        case.note("DATA_FIN times after the first (s)", str(
            [round(s.time - first, 3) for s in data_fins()]) + f"; subflow RTO {rto} s")
        assert late[0].time - first >= 0.9 * rto, (late[0].time - first, rto)
        assert late[1].time - first >= 2.5 * rto, (late[1].time - first, rto)   # backing off
        dsns = {o["dsn"] for s in data_fins() for o in s.options if o["subtype"] == "DSS"}
        assert len(dsns) == 1, dsns                    # the same DATA_FIN each time


@covers("3.3-no-mapping-join", "3.6-tcprst-reason")
def test_data_without_a_mapping_on_a_joined_subflow_is_reset(case):
    """The peer sends 100 bytes on a joined subflow with a DSS that carries only a Data
    ACK: no mapping covers them; the kernel resets the subflow with MP_TCPRST and delivers
    nothing. The reason is the kernel's choice among the RFC's codes: Linux 6.18 says
    "middlebox interference" (6), 6.12 and 6.1 "MPTCP-specific error" (1); the case notes
    it. RFC 8684 §3.3, §3.7."""
    with peer_lab(case) as pl, pl.connected() as conn:
        pl.peer.send(b"a" * 100)
        assert read_for(conn, 100) == b"a" * 100
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        pl.peer.send(b"n" * 100, sf, mapping=False)
        _, rst = pl.peer.expect("MP_TCPRST", tcp_flags="R", where=lambda s, o: s.dport == sf.sport)
        case.note("MP_TCPRST reason", f"{rst['reason']} ({rst.get('reason_name')})")
        assert rst["reason"] in (1, 6), rst      # MPTCP-specific error / middlebox interference
        assert read_for(conn, 100, 0.3) == b""
        pl.expect(MPTcpExtMPRstTx=1)


@covers("3.3-out-of-window")
def test_data_mapped_outside_the_receive_window_is_dropped(case):
    """The peer maps 100 bytes 2^40 past the next expected DSN, then 10 in sequence: only the
    10 reach the application, the kernel's Data ACK covers only them, and it counts the
    out-of-window mapping. RFC 8684 §3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        pl.peer.send(b"a" * 100)
        assert read_for(conn, 100) == b"a" * 100
        pl.peer.send(b"o" * 100, dsn=pl.peer.snd_dsn + (1 << 40))
        pl.peer.send(b"i" * 10)
        assert read_for(conn, 110, 0.5) == b"i" * 10
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == pl.peer.snd_dsn)
        pl.expect(MPTcpExtNoDSSInWindow=1)


@covers("3.3-data-ack-unsent")
def test_data_ack_for_data_never_sent_is_ignored(case):
    """The peer sends a Data ACK 50 kB beyond anything the kernel sent: the kernel ignores
    it: its next data starts where its stream was and arrives whole, the connection is not
    reset. RFC 8684 §3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        conn.sendall(b"k" * 1000)
        assert pl.peer.recv(1000) == b"k" * 1000
        pl.peer.received += b"\0" * 50_000            # pretend, for one ACK
        pl.peer.ack()
        del pl.peer.received[1000:]
        conn.sendall(b"m" * 1000)
        assert pl.peer.recv(2000)[1000:] == b"m" * 1000
        seg, opt = pl.peer.expect("DSS", where=lambda s, o: s.payload_len > 0 and
                                  o.get("dsn") is not None and o["ssn"] > 1000)
        assert opt["dsn"] == (pl.peer.rcv_base + 1000) % 2**64
        assert not any("R" in s.tcp_flags for s in pl.peer.segments)


# -- MP_FAIL -------------------------------------------------------------------------------------

@covers("3.7-mp-fail")
def test_kernel_detects_a_bad_dss_checksum_and_sends_mp_fail(case):
    """A mapping whose checksum fails on the only subflow: the kernel counts it and sends
    MP_FAIL with the DSN of that mapping's start. (What it then does with those bytes, with
    no infinite mapping from the peer: it falls back at the failed mapping and hands them to
    the application as TCP would; recorded here so that a change shows.) RFC 8684 §3.7."""
    with peer_lab(case, kernel_mptcp={"checksum_enabled": 1}, checksum=True) as pl, \
            pl.connected() as conn:
        pl.peer.send(b"a" * 1000)
        assert read_for(conn, 1000) == b"a" * 1000
        bad_dsn = pl.peer.snd_dsn
        pl.peer.send(b"b" * 1000, corrupt_checksum=True)
        _, fail = pl.peer.expect("MP_FAIL", timeout=3)
        assert fail["dsn"] == bad_dsn
        assert read_for(conn, 1000, 0.5) == b"b" * 1000
        pl.expect(MPTcpExtDataCsumErr=1, MPTcpExtMPFailTx=1)


@covers("3.7-infinite-mapping", "3.7-after-fallback")
def test_mp_fail_on_a_single_subflow_turns_the_kernel_to_an_infinite_mapping(case):
    """The peer sends MP_FAIL on the only subflow: the kernel answers with MP_FAIL and falls
    back: its next data carries an infinite mapping (data-level length 0) and flows on; after
    it, the kernel's segments carry no MPTCP option (no Data ACK) and the peer's plain data is
    read; a join to the fallen-back connection is refused. RFC 8684 §3.7."""
    with peer_lab(case, kernel_mptcp={"checksum_enabled": 1}, checksum=True) as pl, \
            pl.connected() as conn:
        conn.sendall(b"k" * 3000)
        assert pl.peer.recv(3000) == b"k" * 3000
        pl.peer.mp_fail(pl.peer.rcv_base)
        pl.peer.expect("MP_FAIL")
        conn.sendall(b"z" * 2000)
        assert pl.peer.recv(5000)[3000:] == b"z" * 2000
        seg, infinite = pl.peer.expect("DSS", where=lambda s, o: s.payload_len > 0)
        assert infinite["data_level_len"] == 0, infinite
        mark = len(pl.peer.segments)
        pl.peer.transmit(pl.peer.subflows[0], ACK | PSH, payload=b"as tcp")
        assert read_for(conn, 6) == b"as tcp"
        pl.peer.expect(where=lambda s, o: s.ack == pl.peer.subflows[0].snd_nxt)
        after = [s for s in pl.peer.segments[mark:] if s.dport == pl.peer.subflows[0].sport]
        assert after and all(not s.options for s in after), "MPTCP options after the fallback"
        sf = pl.peer.join(KERNEL_V4[1], PORT, addr_id=2)
        assert sf.state == "reset", "a join was accepted after the fallback"
        pl.expect(MPTcpExtMPFailRx=1, MPTcpExtInfiniteMapTx=1, MPTcpExtMPJoinAckRx=0)


@covers("3.3-mapping")
def test_payload_of_an_mpc_data_segment_is_the_first_mapping(case):
    """The peer's first data rides on the MP_CAPABLE (data-level length, no DSS); the kernel
    takes it as the mapping of the stream's first bytes and acknowledges the DSN after
    them. RFC 8684 §3.1, §3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        sf = pl.peer.subflows[0]
        pl.peer.send(b"first")
        assert read_for(conn, 5) == b"first"
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == (pl.peer.idsn + 6) % 2**64)
        pl.peer.transmit(sf, ACK | PSH, payload=b"no map")      # initial subflow, no DSS
        assert read_for(conn, 6, 0.5) == b"no map" and is_fallback(conn)


@covers("3.3-data-fin")
def test_data_fin_ends_the_stream_and_is_acknowledged(case):
    """A DATA_FIN from the peer is the end of the data stream: the application reads the
    data, then end of file, and the kernel acknowledges with a Data ACK one past the
    DATA_FIN's DSN. RFC 8684 §3.3.3."""
    with peer_lab(case) as pl, pl.connected() as conn:
        pl.peer.send(b"last words")
        fin_dsn = pl.peer.snd_dsn
        pl.peer.data_fin()
        assert read_for(conn, 10) == b"last words"
        assert conn.recv(10) == b""
        pl.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == (fin_dsn + 1) % 2**64)
