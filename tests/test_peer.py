"""The Scapy-driven MPTCP peer: its segments are exact, and a real kernel talks MPTCP with it."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from mptcplab.layers import MPDSS, mptcp_options
from mptcplab.peer import ExpectationFailed, MptcpPeer, build_segment

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.mark.parametrize("src,dst,cls", [("10.0.0.1", "10.0.0.2", IP),
                                         ("2001:db8::1", "2001:db8::2", IPv6)])
def test_built_segments_carry_correct_checksums(src: str, dst: str, cls: type) -> None:
    opt = bytes(MPDSS(data_ack=7, dsn=9, ssn=1, data_level_len=3, checksum=0x1234))
    wire = build_segment(src, dst, 40001, 5000, 1000, 2000, 0x18, opt, b"abc")
    pkt = cls(wire)
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, str(tcp.flags)) == (40001, 5000, 1000,
                                                                       2000, "PA")
    assert bytes(tcp.payload) == b"abc"
    assert mptcp_options(tcp)[0].as_dict()["checksum"] == 0x1234
    # Scapy recomputes the checksums from scratch: they must come out the same.
    rebuilt = cls(wire)
    del rebuilt[TCP].chksum
    if cls is IP:
        del rebuilt.chksum
    assert bytes(rebuilt) == wire


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from mptcplab.topo import Lab, Topology

    topo = Topology("peer")
    client = topo.host("client")
    server = topo.host("server").set_limits(subflows=2, add_addr_accepted=2)
    topo.link(client, server, v4="10.0.1.0/24", v6="dead:beef:1::/64")
    topo.link(client, server, v4="10.0.2.0/24", v6="dead:beef:2::/64")
    with Lab(topo) as running:
        yield running


def _listener(lab, family=socket.AF_INET):
    from mptcplab.topo import IPPROTO_MPTCP

    lst = lab["server"].socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    lst.bind(("", 5000))
    lst.listen()
    lst.settimeout(5)
    return lst


def _read(conn: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@root
@pytest.mark.parametrize("checksum", [False, True])
def test_peer_and_kernel_exchange_data_both_ways_over_two_subflows(lab, checksum: bool) -> None:
    lst = _listener(lab)
    before = lab["server"].counters()
    with MptcpPeer(lab["client"], checksum=checksum) as peer:
        peer.connect("10.0.1.2", 5000)
        conn, _ = lst.accept()
        conn.settimeout(5)
        sent = os.urandom(20_000)
        peer.send(sent)
        assert _read(conn, len(sent)) == sent
        back = os.urandom(30_000)
        conn.sendall(back)
        assert peer.recv(len(back)) == back
        sf = peer.join("10.0.2.2", 5000, addr_id=2)
        assert (sf.state, sf.hmac_ok) == ("established", True)
        more = os.urandom(5_000)
        peer.send(more, sf)
        assert _read(conn, len(more)) == more
        peer.data_fin()
        assert conn.recv(10) == b""          # the kernel saw our DATA_FIN as end of stream
        conn.close()
        _, fin = peer.expect("DSS", data_fin=True)
        if checksum:
            assert "checksum" in fin
    (lab["server"].counters() - before).expect(MPTcpExtMPCapableSYNRX=1,
                                               MPTcpExtMPJoinAckRx=1,
                                               MPTcpExtDataCsumErr=0)


@root
def test_peer_as_server_accepts_the_kernel_and_its_join(lab) -> None:
    """The kernel connects to the peer, the peer announces its second address, the kernel
    joins it: the peer answers both handshakes itself."""
    from mptcplab.topo import IPPROTO_MPTCP

    with MptcpPeer(lab["client"]) as peer:
        peer.listen(6000)
        cli = lab["server"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        cli.settimeout(5)
        cli.connect(("10.0.1.1", 6000))
        first = peer.accept()
        cli.sendall(b"k" * 4000)
        assert peer.recv(4000) == b"k" * 4000
        peer.add_addr("10.0.2.1", 2)
        peer.expect("ADD_ADDR", echo=True, addr="10.0.2.1")
        joined = peer.accept()
        assert joined.join and joined.hmac_ok and joined is not first
        cli.close()


@root
def test_expect_failure_lists_what_arrived(lab) -> None:
    lst = _listener(lab)
    with MptcpPeer(lab["client"]) as peer:
        peer.connect("10.0.1.2", 5000)
        lst.accept()
        with pytest.raises(ExpectationFailed) as err:
            peer.expect("MP_FASTCLOSE", timeout=0.3)
    text = str(err.value)
    assert "expected MP_FASTCLOSE within 0.3 s" in text
    assert "MP_CAPABLE v1 SYN-ACK" in text              # the SYN-ACK that did arrive


@root
def test_peer_removes_its_rst_rule_on_close(lab) -> None:
    peer = MptcpPeer(lab["client"])
    table = peer._table
    assert table in lab["client"].run(["nft", "list", "tables"]).stdout
    peer.close()
    assert table not in lab["client"].run(["nft", "list", "tables"]).stdout


@root
def test_peer_resets_go_out_and_the_kernels_data_fin_is_acknowledged(lab) -> None:
    """The nft rule that silences the kernel's RSTs for the peer's ports lets the peer's own
    RSTs through; a DATA_FIN riding on the kernel's last data is acknowledged."""
    lst = _listener(lab)
    with MptcpPeer(lab["client"]) as peer:
        peer.connect("10.0.1.2", 5000)
        conn, _ = lst.accept()
        conn.sendall(b"bye" * 100)
        conn.shutdown(socket.SHUT_WR)            # the kernel's DATA_FIN
        assert peer.recv(300) == b"bye" * 100
        peer.expect("DSS", data_fin=True)
        assert peer.remote_data_fin
        assert peer.data_ack == (peer.rcv_base + 301) % 2**64
        conn.settimeout(0.2)
        with pytest.raises(TimeoutError):        # before the reset: a quiet peer
            conn.recv(10)
        peer.reset()
        conn.settimeout(5)
        # The kernel's socket has shut its sending side, so only a read can tell a reset
        # from a quiet peer: this kernel says ENOTCONN (its only subflow is gone) where
        # plain TCP says ECONNRESET; never EOF, never a timeout.
        with pytest.raises(OSError) as err:
            conn.recv(10)
        assert err.value.errno in (errno.ECONNRESET, errno.ENOTCONN), err.value


@root
def test_peer_reshapes_handshake_options_and_sends_32_bit_dsns(lab) -> None:
    """connect(syn=...) changes the SYN's MP_CAPABLE (the kernel sees version 2 and still
    answers v1), dsn32/ack32 put 4-byte DSNs and Data ACKs on the wire."""
    lst = _listener(lab)
    with MptcpPeer(lab["client"], dsn32=True, ack32=True) as peer:
        peer.connect("10.0.1.2", 5000, syn={"version": 2})
        conn, _ = lst.accept()
        conn.settimeout(5)
        assert peer.synack is not None
        (mpc,) = [o for o in peer.synack.options if o["subtype"] == "MP_CAPABLE"]
        assert mpc["version"] == 1
        peer.send(b"a" * 10, mpc=False)
        assert _read(conn, 10) == b"a" * 10
        opt = peer._dss(mapping=(peer.snd_dsn, 11, 1), payload=b"b")
        assert (opt.as_dict()["dsn_len"], opt.as_dict()["data_ack_len"]) == (4, 4)


def test_shaped_overrides() -> None:
    from mptcplab.errors import LabError
    from mptcplab.layers import MPCapable
    from mptcplab.peer.endpoint import DEFAULT, shaped

    base = MPCapable(version=1, flags=1)
    assert shaped(base, DEFAULT) == [base]
    assert shaped(base, None) == []
    assert shaped(base, b"\x1e\x04\x01\x01") == [b"\x1e\x04\x01\x01"]
    (changed,) = shaped(base, {"version": 2})
    assert bytes(changed)[2] & 0x0F == 2 and bytes(base)[2] & 0x0F == 1
    (fn,) = shaped(base, lambda o: (setattr(o, "flags", 0x41), o)[1])
    assert bytes(fn)[3] == 0x41
    with pytest.raises(LabError):
        shaped(base, 42)
