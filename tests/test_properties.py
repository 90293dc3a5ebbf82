"""Properties of the MPTCP layers over generated inputs (hypothesis).

* build -> dissect -> build is the identity for every subtype and every valid field value;
* any bytes given as an MPTCP option are either a well-formed layer or an MPMalformed, both
  giving back exactly those bytes, and which of the two follows the RFC lengths (checked by an
  oracle written here from the RFC figures);
* no TCP header, however broken, makes dissection or ``bytes()`` raise.
"""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.packet import Packet

from mptcplab.layers import (
    MPDSS,
    MPAddAddr,
    MPAddAddrV0,
    MPCapable,
    MPExperimental,
    MPFail,
    MPFastclose,
    MPJoin,
    MPMalformed,
    MPPrio,
    MPRemoveAddr,
    MPTCPOption,
    MPTcpRst,
    MPUnknown,
)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TCP_SETTINGS = settings(SETTINGS, max_examples=300)  # whole headers: slower per example

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
ipv4 = st.binary(min_size=4, max_size=4).map(lambda b: socket.inet_ntop(socket.AF_INET, b))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: socket.inet_ntop(socket.AF_INET6, b))


# ---------------------------------------------------------------------------------------------
# Strategies: one per subtype, each yielding a layer built from valid fields, length unset


@st.composite
def capable(draw: st.DrawFn) -> MPCapable:
    version = draw(st.sampled_from([0, 1]))
    length = draw(st.sampled_from([12, 20] if version == 0 else [4, 12, 20, 22, 24]))
    fields: dict[str, Any] = {"version": version, "flags": draw(u8)}
    if length >= 12:
        fields["sender_key"] = draw(u64)
    if length >= 20:
        fields["receiver_key"] = draw(u64)
    if length >= 22:
        fields["data_level_len"] = draw(u16)
    if length >= 24:
        fields["checksum"] = draw(u16)
    return MPCapable(**fields)


@st.composite
def join(draw: st.DrawFn) -> MPJoin:
    form = draw(st.sampled_from(["syn", "synack", "ack"]))
    if form == "ack":
        return MPJoin(hmac=draw(st.binary(min_size=20, max_size=20)))
    common = {"flags": draw(st.integers(0, 1)), "addr_id": draw(u8), "nonce": draw(u32)}
    if form == "syn":
        return MPJoin(token=draw(u32), **common)
    return MPJoin(truncated_hmac=draw(u64), **common)


@st.composite
def dss(draw: st.DrawFn) -> MPDSS:
    fields: dict[str, Any] = {}
    explicit = draw(st.booleans())
    flags = draw(st.integers(0, 31))
    if explicit:
        fields["flags"] = flags
    if flags & 0x01:
        fields["data_ack"] = draw(u64 if flags & 0x02 else u32)
    if flags & 0x04:
        fields["dsn"] = draw(u64 if flags & 0x08 else u32)
        fields["ssn"] = draw(u32)
        fields["data_level_len"] = draw(u16)
        if draw(st.booleans()):
            fields["checksum"] = draw(u16)
    return MPDSS(**fields)


@st.composite
def add_addr(draw: st.DrawFn) -> MPAddAddr:
    echo = draw(st.booleans())
    fields: dict[str, Any] = {"flags": int(echo), "addr_id": draw(u8),
                              "addr": draw(st.one_of(ipv4, ipv6))}
    if draw(st.booleans()):
        fields["port"] = draw(u16)
    if not echo:
        fields["hmac"] = draw(u64)
    return MPAddAddr(**fields)


@st.composite
def add_addr_v0(draw: st.DrawFn) -> MPAddAddrV0:
    fields: dict[str, Any] = {"addr_id": draw(u8), "addr": draw(st.one_of(ipv4, ipv6))}
    if draw(st.booleans()):
        fields["port"] = draw(u16)
    return MPAddAddrV0(**fields)


@st.composite
def prio(draw: st.DrawFn) -> MPPrio:
    fields: dict[str, Any] = {"flags": draw(st.integers(0, 1))}
    if draw(st.booleans()):
        fields["addr_id"] = draw(u8)
    return MPPrio(**fields)


LAYERS = st.one_of(
    capable(),
    join(),
    dss(),
    add_addr(),
    add_addr_v0(),
    st.lists(u8, min_size=1, max_size=40).map(lambda ids: MPRemoveAddr(addr_ids=ids)),
    prio(),
    u64.map(lambda dsn: MPFail(dsn=dsn)),
    u64.map(lambda key: MPFastclose(receiver_key=key)),
    st.builds(lambda f, r: MPTcpRst(flags=f, reason=r), st.integers(0, 15), u8),
    st.builds(lambda n, d: MPExperimental(nibble=n, data=d), st.integers(0, 15),
              st.binary(max_size=36)),
    st.builds(lambda s, n, d: MPUnknown(subtype=s, nibble=n, data=d), st.integers(9, 14),
              st.integers(0, 15), st.binary(max_size=36)),
)


@SETTINGS
@given(LAYERS)
def test_build_dissect_build_is_identity(layer: MPTCPOption) -> None:
    built = bytes(layer)
    assert built[0] == 30 and built[1] == len(built)
    decoded = MPTCPOption(built)
    assert type(decoded) is type(layer)
    assert bytes(decoded) == built
    assert decoded.as_dict() == layer.as_dict()
    again = type(layer)(**{k: v for k, v in decoded.fields.items() if k != "length"})
    assert bytes(again) == built


# ---------------------------------------------------------------------------------------------
# Arbitrary bytes as an MPTCP option


def _dss_lengths(flags: int) -> set[int]:
    length = 4
    if flags & 0x01:
        length += 8 if flags & 0x02 else 4
    if not flags & 0x04:
        return {length}
    length += (8 if flags & 0x08 else 4) + 4 + 2
    return {length, length + 2}


def rfc_well_formed(raw: bytes) -> bool:
    """Is ``raw`` (its first ``raw[1]`` bytes) an MPTCP option of a shape some RFC defines?"""
    if len(raw) < 3 or raw[0] != 30 or not 3 <= raw[1] <= len(raw):
        return False
    option = raw[:raw[1]]
    length, subtype, nibble = len(option), option[2] >> 4, option[2] & 0x0F
    if subtype == 0x0:                        # RFC 6824 (version 0) has only 12 and 20
        return length in ((12, 20) if nibble == 0 else (4, 12, 20, 22, 24))
    if subtype == 0x1:
        return length in (12, 16, 24)
    if subtype == 0x2:
        return length >= 4 and length in _dss_lengths(option[3] & 0x1F)
    if subtype == 0x3:
        if nibble == 4:                       # RFC 6824, IPVer 4
            return length in (8, 10)
        if nibble == 6:                       # RFC 6824, IPVer 6
            return length in (20, 22)
        return length in ((8, 10, 20, 22) if nibble & 1 else (16, 18, 28, 30))
    if subtype == 0x4:
        return length >= 4
    if subtype == 0x5:
        return length in (3, 4)
    if subtype in (0x6, 0x7):
        return length == 12
    if subtype == 0x8:
        return length == 4
    return True                               # MP_EXPERIMENTAL and unassigned subtypes


EXPECTED_CLASS = {0x0: MPCapable, 0x1: MPJoin, 0x2: MPDSS, 0x4: MPRemoveAddr, 0x5: MPPrio,
                  0x6: MPFail, 0x7: MPFastclose, 0x8: MPTcpRst, 0xF: MPExperimental}


def _check_option(raw: bytes) -> MPTCPOption:
    decoded = MPTCPOption(raw)
    assert bytes(decoded) == raw
    if rfc_well_formed(raw):
        subtype = raw[2] >> 4
        if subtype == 0x3:
            expected = MPAddAddrV0 if raw[2] & 0x0F in (4, 6) else MPAddAddr
        else:
            expected = EXPECTED_CLASS.get(subtype, MPUnknown)
        assert type(decoded) is expected
        assert decoded.length == raw[1]
        assert decoded.as_dict()["length"] == raw[1]
    else:
        assert type(decoded) is MPMalformed
        assert decoded.reason and decoded.reason != "well-formed"
        assert decoded.as_dict()["malformed"] is True
    decoded.summary()
    decoded.show(dump=True)
    return decoded


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=40))
def test_option_value_with_any_length_byte(length: int, data: bytes) -> None:
    _check_option(b"\x1e" + bytes([length]) + data)


@SETTINGS
@given(st.integers(0, 15), st.binary(max_size=37))
def test_option_with_exact_length_every_subtype(subtype: int, rest: bytes) -> None:
    """Length byte equal to the bytes present, so the shape checks (not truncation) decide."""
    data = bytes([subtype << 4 | (rest[0] & 0x0F if rest else 0)]) + rest[1:]
    _check_option(bytes([30, len(data) + 2]) + data)


@SETTINGS
@given(st.binary(min_size=1, max_size=48))
def test_option_from_arbitrary_bytes(raw: bytes) -> None:
    _check_option(raw)


@SETTINGS
@given(LAYERS, st.binary(min_size=1, max_size=12))
def test_trailing_bytes_are_not_part_of_the_option(layer: MPTCPOption, tail: bytes) -> None:
    """Whatever follows an option (the next options) never changes how it decodes."""
    built = bytes(layer)
    decoded = MPTCPOption(built + tail)
    assert type(decoded) is type(layer)
    assert bytes(decoded) == built + tail
    assert decoded.as_dict() == layer.as_dict()


# ---------------------------------------------------------------------------------------------
# Whole TCP headers


def _scapy_own_raise(options: bytes) -> bool:
    """Would Scapy itself (without mptcplab) raise on these options? TCP-AO (kind 29) with a
    one-byte value makes its ``TCPAOValue`` raise; that is Scapy's bug, not the hook's."""
    while options:
        kind = options[0]
        if kind == 0:
            return False
        if kind == 1:
            options = options[1:]
            continue
        olen = max(options[1] if len(options) > 1 else 0, 2)
        if kind == 29 and len(options[2:olen]) == 1:
            return True
        options = options[olen:]
    return False


@st.composite
def options_area(draw: st.DrawFn) -> bytes:
    """Options bytes: random chunks, many of them (possibly broken) MPTCP options."""
    chunks = draw(st.lists(st.one_of(
        st.binary(max_size=12),
        st.builds(lambda n, d: b"\x1e" + bytes([n]) + d, u8, st.binary(max_size=30)),
        LAYERS.map(bytes),
        st.sampled_from([b"\x01", b"\x00", b"\x02\x04\x05\xb4", b"\x04\x02",
                         b"\x08\x0a" + bytes(8), b"\x03\x03\x07"]),
    ), max_size=6))
    return b"".join(chunks)[:60]


@st.composite
def tcp_wire(draw: st.DrawFn) -> tuple[bytes, int]:
    head = bytearray(draw(st.binary(min_size=20, max_size=20)))
    dataofs = draw(st.integers(0, 15))
    head[12] = dataofs << 4 | (head[12] & 0x0F)
    options = draw(options_area())
    payload = draw(st.binary(max_size=8))
    return bytes(head) + options + payload, dataofs


@TCP_SETTINGS
@given(tcp_wire())
def test_tcp_from_random_bytes_never_raises(case: tuple[bytes, int]) -> None:
    wire, dataofs = case
    assume(not _scapy_own_raise(wire[20:dataofs * 4]))
    tcp = TCP(wire)
    assert bytes(tcp) == wire
    repr(tcp)
    tcp.summary()
    tcp.show(dump=True)
    for name, value in tcp.options:
        if name == "MPTCP":
            assert isinstance(value, MPTCPOption)
            assert bytes(value) in wire


@SETTINGS
@given(st.binary(min_size=20, max_size=80))
def test_tcp_from_arbitrary_bytes_never_raises(wire: bytes) -> None:
    assume(not _scapy_own_raise(wire[20:(wire[12] >> 4) * 4]))
    tcp = TCP(wire)
    assert bytes(tcp) == wire
    repr(tcp)


@TCP_SETTINGS
@given(tcp_wire())
def test_ip_with_random_tcp_header_never_raises(case: tuple[bytes, int]) -> None:
    wire, _ = case
    ip_wire = bytes(IP(src="192.0.2.1", dst="198.51.100.1", proto=6)) + wire
    ip_wire = ip_wire[:2] + len(ip_wire).to_bytes(2, "big") + ip_wire[4:]
    packet = IP(ip_wire)
    assert bytes(packet) == ip_wire
    repr(packet)
    packet.summary()
    packet.show(dump=True)


@st.composite
def well_formed_options(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Options lists a user would build: MPTCP layers mixed with everyday TCP options."""
    items = draw(st.lists(st.one_of(
        LAYERS.map(lambda layer: ("MPTCP", layer)),
        st.just(("NOP", None)),
        u16.map(lambda mss: ("MSS", mss)),
        st.integers(0, 14).map(lambda ws: ("WScale", ws)),
        st.just(("SAckOK", b"")),
        st.tuples(u32, u32).map(lambda ts: ("Timestamp", ts)),
    ), min_size=1, max_size=5))
    return items


def _option_len(item: tuple[str, Any]) -> int:
    name, value = item
    return {"NOP": 1, "MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10}.get(name) \
        or len(bytes(value))


@TCP_SETTINGS
@given(well_formed_options())
def test_built_header_dissects_back(options: list[tuple[str, Any]]) -> None:
    area = sum(_option_len(o) for o in options)
    assume(area <= 40)
    tcp = TCP(sport=1, dport=2, chksum=0, options=options)
    wire = bytes(tcp)
    assert len(wire) == 20 + area + (-area % 4)
    assert wire[12] >> 4 == 5 + (area + 3) // 4
    decoded = TCP(wire)
    got = [(n, v) for n, v in decoded.options if n != "EOL"]
    assert len(got) == len(options)
    for (name, value), (got_name, got_value) in zip(options, got):
        assert got_name == name
        if name == "MPTCP":
            assert isinstance(got_value, Packet) and type(got_value) is type(value)
            assert bytes(got_value) == bytes(value)
            assert got_value.as_dict() == value.as_dict()
    decoded.clear_cache()
    assert bytes(decoded) == wire
