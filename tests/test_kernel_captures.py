"""The lab's own captures of this kernel (tests/data, recorded by tools/make_captures.py).

Each is a real Linux MPTCP connection between two lab namespaces; here the layers and the crypto
must agree with everything the kernel put on the wire: tokens from keys, MP_JOIN and ADD_ADDR
HMACs, DSS checksums over the captured payload, DSNs from IDSNs, and the bytes sent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from mptcplab import crypto
from mptcplab.capture import read_records, scapy_packet
from mptcplab.layers import MPAddAddr, MPDSS, MPJoin, MPMalformed, MPTCPOption, mptcp_options
from mptcplab.layers.craft import add_addr_ok, dss_checksum_ok, join_ok

DATA = Path(__file__).resolve().parent / "data"
CAPTURES = sorted(p.stem for p in DATA.glob("kernel-*.pcap"))


@dataclass
class Seg:
    frame: int
    src: str
    sport: int
    dst: str
    dport: int
    flags: str
    seq: int
    payload: bytes
    options: list[Any]
    wire_options: list[bytes]


@dataclass
class Capture:
    name: str
    meta: dict[str, Any]
    segs: list[Seg] = field(default_factory=list)

    def with_option(self, cls: type, **match: Any) -> list[tuple[Seg, Any]]:
        out = []
        for seg in self.segs:
            for opt in seg.options:
                d = opt.as_dict()
                if isinstance(opt, cls) and all(d.get(k) == v for k, v in match.items()):
                    out.append((seg, opt))
        return out

    @property
    def client_key(self) -> int:
        (seg, opt), *_ = self.with_option(MPTCPOption, subtype="MP_CAPABLE", length=20)
        return opt.sender_key

    @property
    def server_key(self) -> int:
        (seg, opt), *_ = self.with_option(MPTCPOption, subtype="MP_CAPABLE", length=20)
        return opt.receiver_key


def _wire_mptcp_options(tcp_header: bytes) -> list[bytes]:
    """The kind-30 options of a TCP header, cut by hand (independently of Scapy's walk)."""
    opts = tcp_header[20:(tcp_header[12] >> 4) * 4]
    out, pos = [], 0
    while pos < len(opts) and opts[pos] != 0:
        if opts[pos] == 1:
            pos += 1
            continue
        length = max(opts[pos + 1], 2)
        if opts[pos] == 30:
            out.append(opts[pos:pos + length])
        pos += length
    return out


def load(name: str) -> Capture:
    cap = Capture(name, json.loads((DATA / f"{name}.json").read_text()))
    for rec in read_records(DATA / f"{name}.pcap"):
        pkt = scapy_packet(rec)
        tcp = pkt.getlayer(TCP)
        if tcp is None:
            continue
        ip = tcp.underlayer
        assert isinstance(ip, (IP, IPv6))
        cap.segs.append(Seg(rec.index, ip.src, tcp.sport, ip.dst, tcp.dport, str(tcp.flags),
                            tcp.seq, bytes(tcp.payload), mptcp_options(tcp),
                            _wire_mptcp_options(bytes(tcp))))
    return cap


@pytest.fixture(scope="module", params=CAPTURES)
def cap(request: pytest.FixtureRequest) -> Capture:
    return load(request.param)


def test_the_lab_has_its_own_captures() -> None:
    assert {"kernel-v1-join", "kernel-v1-csum", "kernel-v1-v6", "kernel-v1-pm"} <= set(CAPTURES)


def test_every_option_decodes_and_rebuilds_to_the_wire_bytes(cap: Capture) -> None:
    count = 0
    for seg in cap.segs:
        assert len(seg.options) == len(seg.wire_options), f"frame {seg.frame}"
        for opt, wire in zip(seg.options, seg.wire_options):
            assert not isinstance(opt, MPMalformed), f"frame {seg.frame}: {opt.summary()}"
            assert bytes(opt) == wire, f"frame {seg.frame}: {opt.summary()}"
            count += 1
    assert count > 10


def test_handshake_keys_and_join_token(cap: Capture) -> None:
    """RFC 8684 3.1/3.2: the SYN-ACK carries the server's key, the ACK both; the MP_JOIN SYN
    names the connection by the token of the key of the host it joins (the server)."""
    syn_ack = [o for s, o in cap.with_option(MPTCPOption, subtype="MP_CAPABLE", length=12)]
    assert [o.sender_key for o in syn_ack] == [cap.server_key]
    joins = cap.with_option(MPJoin, length=12)
    assert joins, "no MP_JOIN SYN in the capture"
    for seg, opt in joins:
        assert opt.token == crypto.key_token(cap.server_key)
        assert opt.token != crypto.key_token(cap.client_key)


def test_join_hmacs_validate(cap: Capture) -> None:
    """RFC 8684 3.2: the SYN-ACK's truncated HMAC (server's key and nonce first) and the third
    ACK's HMAC (client's first) verify from the keys and both nonces."""
    (syn_seg, syn), = cap.with_option(MPJoin, length=12)
    (_, synack), = cap.with_option(MPJoin, length=16)
    (_, ack), = cap.with_option(MPJoin, length=24)
    keys = {"client": cap.client_key, "server": cap.server_key}
    assert join_ok(synack, sender_key=keys["server"], receiver_key=keys["client"],
                   sender_nonce=synack.nonce, receiver_nonce=syn.nonce)
    assert join_ok(ack, sender_key=keys["client"], receiver_key=keys["server"],
                   sender_nonce=syn.nonce, receiver_nonce=synack.nonce)
    assert not join_ok(ack, sender_key=keys["server"], receiver_key=keys["client"],
                       sender_nonce=syn.nonce, receiver_nonce=synack.nonce)
    assert syn_seg.dst == cap.meta["announced"]


def test_add_addr_hmac_echo_and_port(cap: Capture) -> None:
    """RFC 8684 3.4.1: the server's announcement carries the rightmost 64 bits of the HMAC
    keyed with its own key first; the client echoes it (E=1, no HMAC)."""
    (seg, ann), = cap.with_option(MPAddAddr, echo=False)
    assert ann.addr == cap.meta["announced"]
    assert ann.addr_id == cap.meta["announced_id"]
    assert ann.as_dict()["port"] == cap.meta.get("announced_port")
    assert add_addr_ok(ann, sender_key=cap.server_key, receiver_key=cap.client_key)
    assert not add_addr_ok(ann, sender_key=cap.client_key, receiver_key=cap.server_key)
    (echo_seg, echo), = cap.with_option(MPAddAddr, echo=True)
    assert (echo.addr, echo.addr_id, echo.as_dict()["port"]) == (
        ann.addr, ann.addr_id, ann.as_dict()["port"])
    assert echo.as_dict()["hmac"] is None
    assert echo_seg.frame > seg.frame and echo_seg.src == seg.dst


def _subflow_streams(cap: Capture) -> dict[tuple[str, int, str, int], bytearray]:
    """Each direction of each subflow as bytes by relative sequence number (1 = first byte)."""
    isn: dict[tuple[str, int, str, int], int] = {}
    streams: dict[tuple[str, int, str, int], bytearray] = defaultdict(bytearray)
    for seg in cap.segs:
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        if "S" in seg.flags:
            isn[key] = seg.seq
        elif seg.payload:
            rel = (seg.seq - isn[key]) & 0xFFFFFFFF
            buf = streams[key]
            if len(buf) < rel - 1 + len(seg.payload):
                buf.extend(b"\0" * (rel - 1 + len(seg.payload) - len(buf)))
            buf[rel - 1:rel - 1 + len(seg.payload)] = seg.payload
    return streams


def test_dss_checksums_verify_over_the_captured_payload(cap: Capture) -> None:
    """RFC 8684 3.3.1: with checksum_enabled, every mapping carries a checksum over the
    pseudo-header and the mapped bytes (which may span several segments)."""
    mappings = [(seg, opt) for seg, opt in cap.with_option(MPDSS)
                if "dsn" in opt.as_dict()]
    assert mappings
    has = [("checksum" in opt.as_dict()) for _, opt in mappings]
    if not cap.meta["checksum"]:
        assert not any(has)
        return
    assert all(has)
    streams = _subflow_streams(cap)
    checked = 0
    for seg, opt in mappings:
        d = opt.as_dict()
        stream = streams[(seg.src, seg.sport, seg.dst, seg.dport)]
        data = b"" if d["data_fin"] and d["ssn"] == 0 else \
            bytes(stream[d["ssn"] - 1:d["ssn"] - 1 + d["data_level_len"]])
        assert dss_checksum_ok(opt, data), f"frame {seg.frame}: {opt.summary()}"
        if data:
            flipped = bytes([data[0] ^ 1]) + data[1:]
            assert not dss_checksum_ok(opt, flipped)
            checked += 1
    # The first data may ride on the MP_CAPABLE (length 24): its mapping is implicit,
    # DSN = IDSN + 1 and subflow sequence 1.
    for seg, opt in cap.with_option(MPTCPOption, subtype="MP_CAPABLE", length=24):
        stream = streams[(seg.src, seg.sport, seg.dst, seg.dport)]
        data = bytes(stream[:opt.data_level_len])
        dsn = (crypto.key_idsn(opt.sender_key) + 1) % 2**64
        assert crypto.dss_checksum_ok(dsn, 1, opt.data_level_len, data, opt.checksum)
        assert not crypto.dss_checksum_ok(dsn + 1, 1, opt.data_level_len, data, opt.checksum)
        checked += 1
    assert checked >= 2


def test_checksum_flag_in_every_handshake_step(cap: Capture) -> None:
    """RFC 8684 3.1: the A flag in SYN, SYN-ACK and ACK says checksums are on."""
    steps = cap.with_option(MPTCPOption, subtype="MP_CAPABLE")
    assert len(steps) >= 3
    for seg, opt in steps:
        assert ("A" in opt.as_dict()["flags"]) == cap.meta["checksum"], f"frame {seg.frame}"


def test_client_dsns_start_at_its_idsn_and_all_bytes_are_mapped(cap: Capture) -> None:
    """RFC 8684 3.3: the first byte is IDSN+1; the mappings cover exactly the bytes sent."""
    if "bytes_sent" not in cap.meta:
        pytest.skip("this capture is not a bulk transfer")
    idsn = crypto.key_idsn(cap.client_key)
    covered: set[int] = set()
    for seg, opt in cap.with_option(MPDSS):
        d = opt.as_dict()
        if "dsn" in d and seg.src != cap.meta["server"] and not d["data_fin"]:
            dsn = d["dsn"] if d["dsn_len"] == 8 else crypto.expand_dsn(d["dsn"], idsn)
            covered.add(dsn - idsn - 1)
            covered.add(dsn - idsn - 1 + d["data_level_len"])
    for length in (22, 24):
        for seg, opt in cap.with_option(MPTCPOption, subtype="MP_CAPABLE", length=length):
            covered.update({0, opt.data_level_len})
    assert min(covered) == 0
    assert max(covered) == cap.meta["bytes_sent"]


def test_path_manager_signals_from_the_kernel() -> None:
    """MP_PRIO after the endpoint became backup, REMOVE_ADDR after it was deleted, and
    MP_FASTCLOSE (with the client's key) plus MP_TCPRST when the server closed with unread
    data."""
    cap = load("kernel-v1-pm")
    (_, prio), = cap.with_option(MPTCPOption, subtype="MP_PRIO")
    assert prio.as_dict()["backup"] is True
    (_, rm), = cap.with_option(MPTCPOption, subtype="REMOVE_ADDR")
    assert rm.addr_ids == [cap.meta["announced_id"]]
    fastclose = cap.with_option(MPTCPOption, subtype="MP_FASTCLOSE")
    assert fastclose
    for seg, opt in fastclose:
        assert opt.receiver_key == cap.client_key
        assert "R" in seg.flags
        assert any(o.as_dict()["subtype"] == "MP_TCPRST" for o in seg.options)
