"""Conformance cases where the kernel faces the lab's Scapy-driven MPTCP peer.

The peer (``mptcplab.peer.MptcpPeer``) lives in the "client" namespace, the kernel in
"server"; two direct links (10.0.1.0/24 + dead:beef:1::/64, 10.0.2.0/24 + dead:beef:2::/64).
Each case builds its own lab. The peer crafts what a kernel never would (bad HMACs, unknown
tokens, forced flags) and checks what comes back, segment by segment and by MIB counters.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mptcplab import crypto
from mptcplab.peer import MptcpPeer, Subflow
from support import probe

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

PORT = 5000


@dataclass
class Case:
    lab: Any
    peer: MptcpPeer
    before: Any                  # the kernel's counters before the case's traffic

    @property
    def kernel(self) -> Any:
        return self.lab["server"]

    def counters(self) -> Any:
        return self.kernel.counters() - self.before


@contextlib.contextmanager
def peer_facing_kernel(*, kernel_mptcp: dict[str, int] | None = None, checksum: bool = False,
                       add_addr_accepted: int = 2) -> Iterator[Case]:
    from mptcplab.topo import Lab, Topology

    topo = Topology("peer-case")
    client = topo.host("client")
    # blackhole_timeout=0 keeps one fallback from turning MPTCP off; kernels without the
    # blackhole (6.1) have no such sysctl and need none.
    quiet = {"blackhole_timeout": 0} if probe("net.mptcp.blackhole_timeout") is None else {}
    server = topo.host("server", mptcp={**quiet, **(kernel_mptcp or {})})
    server.set_limits(subflows=4, add_addr_accepted=add_addr_accepted)
    topo.link(client, server, v4="10.0.1.0/24", v6="dead:beef:1::/64")
    topo.link(client, server, v4="10.0.2.0/24", v6="dead:beef:2::/64")
    with Lab(topo) as lab, MptcpPeer(lab["client"], checksum=checksum) as peer:
        yield Case(lab, peer, lab["server"].counters())


@contextlib.contextmanager
def connected(case: Case, family: int = socket.AF_INET) -> Iterator[socket.socket]:
    """The peer connects to a kernel MPTCP listener; yields the kernel's accepted socket."""
    from mptcplab.topo import IPPROTO_MPTCP

    lst = case.kernel.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    lst.bind(("", PORT))
    lst.listen()
    lst.settimeout(5)
    case.peer.connect("dead:beef:1::2" if family == socket.AF_INET6 else "10.0.1.2", PORT)
    conn, _ = lst.accept()
    conn.settimeout(5)
    try:
        yield conn
    finally:
        conn.close()
        lst.close()


@contextlib.contextmanager
def kernel_connects_to_peer(case: Case, family: int = socket.AF_INET,
                            ports: tuple[int, ...] = (6000,)) -> Iterator[socket.socket]:
    """The kernel connects to the peer (peer as server); yields the kernel's socket."""
    from mptcplab.topo import IPPROTO_MPTCP

    for port in ports:
        case.peer.listen(port)
    sock = case.kernel.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    sock.settimeout(5)
    sock.connect(("dead:beef:1::1" if family == socket.AF_INET6 else "10.0.1.1", ports[0]))
    case.peer.accept()
    try:
        yield sock
    finally:
        sock.close()


def read_exactly(conn: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def payload_subflows(case: Case, since: int) -> dict[int, int]:
    """Bytes of kernel data that reached each peer subflow (by local port) since segment #."""
    out: dict[int, int] = {}
    for seg in case.peer.segments[since:]:
        if seg.payload_len:
            out[seg.dport] = out.get(seg.dport, 0) + seg.payload_len
    return out


# ---------------------------------------------------------------------------------------------
# Handshake and checksums


def test_peer_asking_for_checksums_makes_the_kernel_use_them() -> None:
    """RFC 8684 3.1 and 3.3.1: if either host sets A, DSS checksums are used in both
    directions — here the kernel has checksum_enabled=0 and only the peer asks."""
    with peer_facing_kernel(kernel_mptcp={"checksum_enabled": 0}, checksum=True) as case:
        with connected(case) as conn:
            conn.sendall(b"k" * 6000)
            assert case.peer.recv(6000) == b"k" * 6000
            mappings = [(seg, opt) for seg in case.peer.segments for opt in seg.options
                        if opt["subtype"] == "DSS" and "dsn" in opt and seg.payload_len]
            assert mappings, "the kernel sent no DSS mapping"
            for seg, opt in mappings:
                assert "checksum" in opt, f"kernel mapping without checksum: {opt}"
                dsn = opt["dsn"] if opt["dsn_len"] == 8 else crypto.expand_dsn(opt["dsn"],
                                                                               case.peer.rcv_base)
                if opt["data_level_len"] == seg.payload_len:
                    assert crypto.dss_checksum_ok(dsn, opt["ssn"], opt["data_level_len"],
                                                  seg.payload, opt["checksum"])
            case.peer.send(b"p" * 3000)
            assert read_exactly(conn, 3000) == b"p" * 3000
        case.counters().expect(MPTcpExtDataCsumErr=0)


def test_kernel_answers_a_v0_syn_as_plain_tcp() -> None:
    """RFC 8684 3.1: a host that does not support the version offered answers without
    MP_CAPABLE and the connection goes on as TCP (this kernel speaks only version 1)."""
    from mptcplab.topo import IPPROTO_MPTCP

    with peer_facing_kernel() as case:
        case.peer.version = 0
        case.peer.token, case.peer.idsn = crypto.token_and_idsn(case.peer.key, 0)
        lst = case.kernel.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("", PORT))
        lst.listen()
        lst.settimeout(5)
        sf = case.peer.connect("10.0.1.2", PORT)
        conn, _ = lst.accept()
        assert case.peer.fallback and sf.state == "established"
        case.peer.transmit(sf, 0x18, payload=b"plain tcp")
        conn.settimeout(5)
        assert conn.recv(100) == b"plain tcp"
        conn.close()
        lst.close()
        case.counters().expect(MPTcpExtMPCapableSYNRX=0, MPTcpExtMPCapableACKRX=0)


def test_kernel_detects_a_bad_dss_checksum_and_sends_mp_fail() -> None:
    """RFC 8684 3.7: a mapping whose checksum fails is not delivered; with a single subflow
    the receiver sends MP_FAIL carrying the DSN of the start of that mapping."""
    with peer_facing_kernel(kernel_mptcp={"checksum_enabled": 1}, checksum=True) as case:
        with connected(case) as conn:
            case.peer.send(b"a" * 1000)
            assert read_exactly(conn, 1000) == b"a" * 1000
            bad_dsn = case.peer.snd_dsn
            case.peer.send(b"b" * 1000, corrupt_checksum=True)
            _, fail = case.peer.expect("MP_FAIL", timeout=3)
            assert fail["dsn"] == bad_dsn
        case.counters().expect(MPTcpExtDataCsumErr=1, MPTcpExtMPFailTx=1)


# ---------------------------------------------------------------------------------------------
# ADD_ADDR from the peer


@pytest.mark.parametrize("family,addr,port", [
    (socket.AF_INET, "10.0.2.1", None),
    (socket.AF_INET, "10.0.2.1", 6001),
    (socket.AF_INET6, "dead:beef:2::1", None),
], ids=["ipv4", "ipv4-port", "ipv6"])
def test_kernel_echoes_a_valid_add_addr_and_joins_it(family: int, addr: str,
                                                     port: int | None) -> None:
    """RFC 8684 3.4.1: an ADD_ADDR with a valid HMAC is echoed (E=1, same id, address and
    port, no HMAC) and the path manager opens a subflow to it with the peer's token."""
    with peer_facing_kernel() as case:
        with kernel_connects_to_peer(case, family, ports=(6000, 6001)) as sock:
            case.peer.add_addr(addr, 5, port=port)
            _, echo = case.peer.expect("ADD_ADDR", echo=True)
            assert (echo["addr_id"], echo["addr"], echo["port"], echo["hmac"]) == (5, addr, port,
                                                                                   None)
            seg, join = case.peer.expect("MP_JOIN", tcp_flags="S", timeout=3)
            assert (seg.dst, seg.dport) == (addr, port or 6000)
            assert join["token"] == case.peer.token
            joined = case.peer.accept()
            assert joined.hmac_ok, "the kernel's third-ACK HMAC did not verify"
            sock.sendall(b"z" * 100)
        case.counters().expect(MPTcpExtAddAddr=1, MPTcpExtEchoAdd=0, MPTcpExtMPJoinSynAckRx=1)


def test_kernel_ignores_an_add_addr_with_a_bad_hmac() -> None:
    """RFC 8684 3.4.1: an ADD_ADDR whose HMAC does not verify is ignored: no echo, no join."""
    with peer_facing_kernel() as case:
        with kernel_connects_to_peer(case):
            case.peer.add_addr("10.0.2.1", 5, bad_hmac=True)
            case.peer.expect_none("ADD_ADDR", within=1.0)
            case.peer.expect_none("MP_JOIN", within=0.5)
        case.counters().expect(MPTcpExtAddAddr=0, MPTcpExtMPJoinSynTx=0)


def test_kernel_echoes_but_does_not_join_when_add_addr_accepted_is_0() -> None:
    """RFC 8684 3.4.1: the echo acknowledges the announcement whatever the receiver then
    does; with add_addr_accepted 0 it opens no subflow."""
    with peer_facing_kernel(add_addr_accepted=0) as case:
        with kernel_connects_to_peer(case):
            case.peer.add_addr("10.0.2.1", 5)
            case.peer.expect("ADD_ADDR", echo=True, addr_id=5)
            case.peer.expect_none("MP_JOIN", within=1.0)
        case.counters().expect(MPTcpExtMPJoinSynTx=0)


# ---------------------------------------------------------------------------------------------
# MP_JOIN from the peer


def test_join_with_valid_token_and_hmac_carries_data() -> None:
    """RFC 8684 3.2: the kernel answers a join with the connection's token by a SYN-ACK
    whose truncated HMAC verifies, accepts the third ACK's HMAC, and takes data on it."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            sf = case.peer.join("10.0.2.2", PORT, addr_id=2)
            assert (sf.state, sf.hmac_ok) == ("established", True)
            case.peer.send(b"j" * 5000, sf)
            assert read_exactly(conn, 5000) == b"j" * 5000
        case.counters().expect(MPTcpExtMPJoinSynRx=1, MPTcpExtMPJoinAckRx=1,
                               MPTcpExtMPJoinAckHMacFailure=0)


def test_join_with_unknown_token_is_reset() -> None:
    """RFC 8684 3.2: a SYN with MP_JOIN naming no connection is answered with a RST."""
    with peer_facing_kernel() as case:
        with connected(case):
            wrong = case.peer.remote_token ^ 0x5A5A5A5A
            sf = case.peer.join("10.0.2.2", PORT, addr_id=2, token=wrong)
            assert sf.state == "reset"
        case.counters().expect(MPTcpExtMPJoinNoTokenFound=1, MPTcpExtMPJoinAckRx=0)


def test_join_with_bad_hmac_in_third_ack_is_reset_with_mp_tcprst() -> None:
    """RFC 8684 3.2 and 3.6: a third ACK whose HMAC fails is refused with a RST carrying
    MP_TCPRST, reason MPTCP-specific error (0x01)."""
    with peer_facing_kernel() as case:
        with connected(case):
            sf = case.peer.join("10.0.2.2", PORT, addr_id=2, bad_hmac=True)
            seg, rst = case.peer.expect("MP_TCPRST", tcp_flags="R",
                                        where=lambda s, o: s.dport == sf.sport)
            assert (rst["reason"], rst["reason_name"]) == (1, "MPTCP-specific error")
        case.counters().expect(MPTcpExtMPJoinAckHMacFailure=1)


def _kernel_bulk(case: Case, conn: socket.socket, n: int) -> dict[int, int]:
    since, base = len(case.peer.segments), len(case.peer.received)
    data = os.urandom(n)
    conn.sendall(data)
    assert case.peer.recv(base + n)[base:] == data
    return payload_subflows(case, since)


def test_backup_subflow_carries_no_data_while_the_other_is_up() -> None:
    """RFC 8684 3.2: a subflow joined with B=1 is for use only when others fail."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            first = case.peer.subflows[0]
            backup = case.peer.join("10.0.2.2", PORT, addr_id=2, backup=True)
            assert backup.state == "established"
            used = _kernel_bulk(case, conn, 200_000)
            assert used.get(first.sport, 0) == 200_000 and backup.sport not in used, used


def test_mp_prio_moves_the_data_to_the_other_subflow() -> None:
    """RFC 8684 3.3.8: MP_PRIO changes a subflow's priority: after the peer marks the first
    subflow backup and the second regular, the kernel sends on the second."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            first = case.peer.subflows[0]
            second = case.peer.join("10.0.2.2", PORT, addr_id=2, backup=True)
            assert _kernel_bulk(case, conn, 50_000).get(first.sport) == 50_000
            case.peer.mp_prio(True, first)
            case.peer.mp_prio(False, second)
            used = _kernel_bulk(case, conn, 200_000)
            assert used.get(second.sport, 0) == 200_000 and first.sport not in used, used
        case.counters().expect(MPTcpExtMPPrioRx=2)


# ---------------------------------------------------------------------------------------------
# REMOVE_ADDR, MP_FASTCLOSE, DATA_FIN


def test_remove_addr_closes_the_subflows_on_that_address() -> None:
    """RFC 8684 3.4.2: REMOVE_ADDR makes the receiver close every subflow using that
    address id (with a RST or FIN on it); the connection goes on over the others."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            second: Subflow = case.peer.join("10.0.2.2", PORT, addr_id=2)
            assert second.state == "established"
            case.peer.remove_addr(2)
            case.peer.expect(tcp_flags="", where=lambda s, o: s.dport == second.sport and
                             ("R" in s.tcp_flags or "F" in s.tcp_flags), timeout=3)
            case.peer.send(b"still here")
            assert read_exactly(conn, 10) == b"still here"
        # On receipt the kernel counts each subflow it closes for the address as RmAddr;
        # RmSubflow counts removals its own path manager decides.
        case.counters().expect(MPTcpExtRmAddr=1, MPTcpExtRmSubflow=0)


def test_fastclose_resets_every_subflow_and_the_application_sees_it() -> None:
    """RFC 8684 3.5: MP_FASTCLOSE with the receiver's key closes the whole connection at
    once: RSTs on all subflows, and the application's next call fails."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            second = case.peer.join("10.0.2.2", PORT, addr_id=2)
            case.peer.fastclose()
            for sf in (case.peer.subflows[0], second):
                case.peer.expect(tcp_flags="R", where=lambda s, o, p=sf.sport: s.dport == p,
                                 timeout=3)
            with pytest.raises(OSError):
                for _ in range(3):
                    conn.sendall(b"x" * 1000)
                    conn.recv(10)
        case.counters().expect(MPTcpExtMPFastcloseRx=1)


def test_fastclose_with_a_wrong_key_is_ignored() -> None:
    """RFC 8684 3.5: only the receiver's own key closes the connection."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            first = case.peer.subflows[0]
            real, case.peer.remote_key = case.peer.remote_key, case.peer.remote_key ^ 1
            case.peer.fastclose()
            case.peer.remote_key = real
            case.peer.expect_none(tcp_flags="R", within=1.0)
            case.peer.send(b"alive", first)
            assert read_exactly(conn, 5) == b"alive"
        case.counters().expect(MPTcpExtMPFastcloseRx=0)


def test_data_fin_ends_the_stream_and_is_acknowledged() -> None:
    """RFC 8684 3.3.3: a DATA_FIN is the end of the data stream; the receiver acknowledges
    it with a data ACK one past its DSN."""
    with peer_facing_kernel() as case:
        with connected(case) as conn:
            case.peer.send(b"last words")
            fin_dsn = case.peer.snd_dsn
            case.peer.data_fin()
            assert read_exactly(conn, 10) == b"last words"
            assert conn.recv(10) == b""
            case.peer.expect("DSS", where=lambda s, o: o.get("data_ack") == (fin_dsn + 1) % 2**64)


def test_mp_fail_on_a_single_subflow_turns_the_kernel_to_an_infinite_mapping() -> None:
    """RFC 8684 3.7: on a connection with one subflow, the receiver of an MP_FAIL answers
    with MP_FAIL and falls back: its next data carries an infinite mapping (data-level length
    0), and the data keeps flowing."""
    with peer_facing_kernel(kernel_mptcp={"checksum_enabled": 1}, checksum=True) as case:
        with connected(case) as conn:
            conn.sendall(b"k" * 3000)
            assert case.peer.recv(3000) == b"k" * 3000
            case.peer.mp_fail(case.peer.rcv_base)
            case.peer.expect("MP_FAIL")
            conn.sendall(b"z" * 2000)
            assert case.peer.recv(5000)[3000:] == b"z" * 2000
            _, infinite = case.peer.expect("DSS", where=lambda s, o: s.payload_len > 0)
            assert infinite["data_level_len"] == 0, infinite
        case.counters().expect(MPTcpExtMPFailRx=1, MPTcpExtInfiniteMapTx=1)
