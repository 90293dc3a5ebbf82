"""The MPTCP option layers against the RFC figures: RFC 8684 (v1) and RFC 6824 (v0).

Every expected byte string below is written by hand from the RFC layout (kind 0x1e, length,
subtype in the high nibble of the third octet, ...), never produced by the code under test.
Each case builds a layer from fields with ``length`` unset, compares the bytes, then dissects
the same bytes with ``MPTCPOption(raw)`` and checks the class and ``as_dict()``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import subprocess
import sys
from typing import Any

import pytest
from scapy.layers import inet
from scapy.layers.inet import IP, TCP
from scapy.packet import NoPayload, Packet

from mptcplab.describe import describe
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
    install,
    mptcp_options,
)

KEY_A = 0x0102030405060708
KEY_B = 0x1112131415161718
KEY_A_HEX = "0102030405060708"
KEY_B_HEX = "1112131415161718"
V6 = "2001:db8::1"
V6_HEX = "20010db8000000000000000000000001"
V4 = "192.0.2.1"
V4_HEX = "c0000201"
HMAC64 = 0xA1A2A3A4A5A6A7A8
HMAC64_HEX = "a1a2a3a4a5a6a7a8"


def h(text: str) -> bytes:
    """Hex with spaces allowed, so the expectations can follow the RFC's 32-bit rows."""
    return bytes.fromhex(text.replace(" ", ""))


def assert_pair(layer: Packet, expected_hex: str, cls: type[Packet],
                fields: dict[str, Any]) -> MPTCPOption:
    """Build ``layer``, compare with the RFC bytes, dissect them back, compare the fields."""
    expected = h(expected_hex)
    built = bytes(layer)
    assert built.hex() == expected.hex()
    assert built[1] == len(built), "the length octet counts the whole option"
    decoded = MPTCPOption(expected)
    assert type(decoded) is cls
    assert bytes(decoded) == expected
    got = decoded.as_dict()
    for name, value in fields.items():
        assert got.get(name, "<absent>") == value, f"{name}: expected {value!r}, got {got!r}"
    assert got == layer.as_dict(), "the built layer and the dissected one describe the same option"
    return decoded


# ---------------------------------------------------------------------------------------------
# MP_CAPABLE (RFC 8684 section 3.1, RFC 6824 section 3.1)


@pytest.mark.parametrize(("layer", "expected", "fields"), [
    pytest.param(MPCapable(version=0, flags="H", sender_key=KEY_A),
                 f"1e0c 0001 {KEY_A_HEX}",
                 {"length": 12, "version": 0, "flags": "H", "sender_key": KEY_A},
                 id="v0-syn-12"),
    pytest.param(MPCapable(version=0, flags="AH", sender_key=KEY_A, receiver_key=KEY_B),
                 f"1e14 0081 {KEY_A_HEX} {KEY_B_HEX}",
                 {"length": 20, "version": 0, "flags": "AH", "sender_key": KEY_A,
                  "receiver_key": KEY_B},
                 id="v0-ack-20"),
    pytest.param(MPCapable(version=1, flags="H"), "1e04 0101",
                 {"length": 4, "version": 1, "flags": "H"}, id="v1-syn-4"),
    pytest.param(MPCapable(version=1, flags="H", sender_key=KEY_B),
                 f"1e0c 0101 {KEY_B_HEX}",
                 {"length": 12, "version": 1, "sender_key": KEY_B}, id="v1-synack-12"),
    pytest.param(MPCapable(version=1, flags="H", sender_key=KEY_A, receiver_key=KEY_B),
                 f"1e14 0101 {KEY_A_HEX} {KEY_B_HEX}",
                 {"length": 20, "sender_key": KEY_A, "receiver_key": KEY_B}, id="v1-ack-20"),
    pytest.param(MPCapable(version=1, flags="H", sender_key=KEY_A, receiver_key=KEY_B,
                           data_level_len=1500),
                 f"1e16 0101 {KEY_A_HEX} {KEY_B_HEX} 05dc",
                 {"length": 22, "data_level_len": 1500}, id="v1-ack-data-22"),
    pytest.param(MPCapable(version=1, flags="AH", sender_key=KEY_A, receiver_key=KEY_B,
                           data_level_len=1500, checksum=0xBEEF),
                 f"1e18 0181 {KEY_A_HEX} {KEY_B_HEX} 05dc beef",
                 {"length": 24, "flags": "AH", "data_level_len": 1500, "checksum": 0xBEEF},
                 id="v1-ack-data-csum-24"),
])
def test_mp_capable(layer: MPCapable, expected: str, fields: dict[str, Any]) -> None:
    assert_pair(layer, expected, MPCapable, {"subtype": "MP_CAPABLE", **fields})


@pytest.mark.parametrize(("letter", "octet"), [
    ("A", "80"), ("B", "40"), ("C", "20"), ("D", "10"),
    ("E", "08"), ("F", "04"), ("G", "02"), ("H", "01"),
])
def test_mp_capable_flag_by_letter(letter: str, octet: str) -> None:
    """A is the most significant bit of the fourth octet, H the least (RFC 8684 figure 4)."""
    decoded = assert_pair(MPCapable(version=1, flags=letter), f"1e04 01{octet}", MPCapable,
                          {"flags": letter})
    assert decoded.flags == letter


# ---------------------------------------------------------------------------------------------
# MP_JOIN (RFC 8684 section 3.2)


def test_mp_join_syn() -> None:
    assert_pair(MPJoin(flags="B", addr_id=2, token=0xA35D6D82, nonce=0xDEADBEEF),
                "1e0c 1102 a35d6d82 deadbeef", MPJoin,
                {"subtype": "MP_JOIN", "length": 12, "backup": True, "addr_id": 2,
                 "token": 0xA35D6D82, "nonce": 0xDEADBEEF})


def test_mp_join_syn_without_backup() -> None:
    assert_pair(MPJoin(flags=0, addr_id=0xFE, token=1, nonce=2),
                "1e0c 10fe 00000001 00000002", MPJoin,
                {"backup": False, "addr_id": 0xFE, "token": 1, "nonce": 2})


def test_mp_join_synack() -> None:
    assert_pair(MPJoin(flags="B", addr_id=5, truncated_hmac=0x0011223344556677,
                       nonce=0x01020304),
                "1e10 1105 0011223344556677 01020304", MPJoin,
                {"length": 16, "backup": True, "addr_id": 5,
                 "truncated_hmac": 0x0011223344556677, "nonce": 0x01020304})


def test_mp_join_ack() -> None:
    mac = bytes(range(0xA0, 0xB4))
    decoded = assert_pair(MPJoin(hmac=mac),
                          "1e18 1000 a0a1a2a3 a4a5a6a7 a8a9aaab acadaeaf b0b1b2b3", MPJoin,
                          {"length": 24, "hmac": mac.hex()})
    assert "token" not in decoded.as_dict() and "nonce" not in decoded.as_dict()


# ---------------------------------------------------------------------------------------------
# DSS (RFC 8684 section 3.3)


def _dss_expected(flags: int, checksum: bool) -> tuple[int, str]:
    """The length and bytes of a DSS with these flags, from the RFC 8684 figure 9 layout."""
    ack_present, ack8, map_present, dsn8 = (bool(flags & bit) for bit in (1, 2, 4, 8))
    body = ""
    if ack_present:
        body += "a1a2a3a4a5a6a7a8" if ack8 else "a1a2a3a4"
    if map_present:
        body += "d1d2d3d4d5d6d7d8" if dsn8 else "d1d2d3d4"
        body += "51525354" + "0102" + ("cdef" if checksum else "")
    length = 4 + (0 if not ack_present else 8 if ack8 else 4) \
        + (0 if not map_present else (8 if dsn8 else 4) + 4 + 2 + (2 if checksum else 0))
    return length, f"1e{length:02x}20{flags:02x}" + body


@pytest.mark.parametrize("checksum", [False, True], ids=["no-csum", "csum"])
@pytest.mark.parametrize("flags", range(32), ids=lambda f: f"flags={f:#04x}")
def test_dss_every_flag_combination(flags: int, checksum: bool) -> None:
    fields: dict[str, Any] = {"flags": flags}
    if flags & 0x01:
        fields["data_ack"] = 0xA1A2A3A4A5A6A7A8 if flags & 0x02 else 0xA1A2A3A4
    if flags & 0x04:
        fields.update(dsn=0xD1D2D3D4D5D6D7D8 if flags & 0x08 else 0xD1D2D3D4,
                      ssn=0x51525354, data_level_len=0x0102)
    if checksum:
        fields["checksum"] = 0xCDEF
    has_csum = checksum and bool(flags & 0x04)  # the checksum belongs to the mapping
    length, expected = _dss_expected(flags, has_csum)
    want: dict[str, Any] = {"subtype": "DSS", "length": length,
                            "data_fin": bool(flags & 0x10)}
    for name in ("data_ack", "dsn", "ssn", "data_level_len"):
        if name in fields:
            want[name] = fields[name]
    if has_csum:
        want["checksum"] = 0xCDEF
    decoded = assert_pair(MPDSS(**fields), expected, MPDSS, want)
    d = decoded.as_dict()
    assert ("data_ack" in d) == bool(flags & 0x01)
    assert ("dsn" in d) == bool(flags & 0x04)
    assert ("checksum" in d) == has_csum
    assert int(decoded.flags) == flags


@pytest.mark.parametrize(("layer", "expected", "fields"), [
    pytest.param(MPDSS(data_ack=0x01020304), "1e08 2001 01020304",
                 {"flags": "A", "data_ack": 0x01020304, "data_ack_len": 4}, id="ack4"),
    pytest.param(MPDSS(data_ack=0x0102030405060708), "1e0c 2003 0102030405060708",
                 {"flags": "aA", "data_ack": 0x0102030405060708, "data_ack_len": 8},
                 id="ack8-auto"),
    pytest.param(MPDSS(flags="Aa", data_ack=5), "1e0c 2003 0000000000000005",
                 {"data_ack": 5, "data_ack_len": 8}, id="ack8-small-value"),
    pytest.param(MPDSS(dsn=0x0A0B0C0D, ssn=0x100, data_level_len=0x200),
                 "1e0e 2004 0a0b0c0d 00000100 0200",
                 {"flags": "M", "dsn": 0x0A0B0C0D, "dsn_len": 4, "ssn": 0x100,
                  "data_level_len": 0x200}, id="dsn4"),
    pytest.param(MPDSS(flags="Mm", dsn=0x0102030405060708, ssn=1, data_level_len=10),
                 "1e12 200c 0102030405060708 00000001 000a",
                 {"flags": "mM", "dsn": 0x0102030405060708, "dsn_len": 8}, id="dsn8"),
    pytest.param(MPDSS(data_ack=5, dsn=0x0A0B0C0D, ssn=1, data_level_len=10, checksum=0xABCD),
                 "1e14 2005 00000005 0a0b0c0d 00000001 000a abcd",
                 {"flags": "MA", "checksum": 0xABCD}, id="ack4-dsn4-csum"),
    pytest.param(MPDSS(data_ack=1 << 40, dsn=1 << 33, ssn=7, data_level_len=1400,
                       checksum=0x0102),
                 "1e1c 200f 0000010000000000 0000000200000000 00000007 0578 0102",
                 {"flags": "mMaA", "data_ack": 1 << 40, "dsn": 1 << 33, "checksum": 0x0102},
                 id="ack8-dsn8-csum"),
])
def test_dss_variants(layer: MPDSS, expected: str, fields: dict[str, Any]) -> None:
    assert_pair(layer, expected, MPDSS, {"subtype": "DSS", **fields})


def test_dss_pure_data_fin() -> None:
    """A DATA_FIN on a segment without data: subflow seq 0, data-level length 1 (RFC 8684
    section 3.3.3)."""
    decoded = assert_pair(MPDSS(flags="AMF", data_ack=0x11, dsn=0x2000, ssn=0,
                                data_level_len=1),
                          "1e12 2015 00000011 00002000 00000000 0001", MPDSS,
                          {"flags": "FMA", "data_fin": True, "dsn": 0x2000, "ssn": 0,
                           "data_level_len": 1})
    assert decoded.data_fin
    assert "DATA_FIN" in decoded.summary()


def test_dss_infinite_mapping() -> None:
    """Data-level length 0 is the infinite mapping of the fallback (RFC 8684 section 3.7)."""
    decoded = assert_pair(MPDSS(dsn=0x1000, ssn=0x10, data_level_len=0),
                          "1e0e 2004 00001000 00000010 0000", MPDSS,
                          {"data_level_len": 0, "data_fin": False})
    assert "infinite mapping" in decoded.summary()


# ---------------------------------------------------------------------------------------------
# ADD_ADDR (RFC 8684 section 3.4.1; RFC 6824 section 3.4.1 for v0)


@pytest.mark.parametrize(("layer", "expected", "fields"), [
    pytest.param(MPAddAddr(addr_id=1, addr=V4, hmac=HMAC64),
                 f"1e10 3001 {V4_HEX} {HMAC64_HEX}",
                 {"length": 16, "addr": V4, "port": None, "hmac": HMAC64}, id="v4-16"),
    pytest.param(MPAddAddr(addr_id=1, addr=V4, port=8080, hmac=HMAC64),
                 f"1e12 3001 {V4_HEX} 1f90 {HMAC64_HEX}",
                 {"length": 18, "addr": V4, "port": 8080, "hmac": HMAC64}, id="v4-port-18"),
    pytest.param(MPAddAddr(addr_id=9, addr=V6, hmac=HMAC64),
                 f"1e1c 3009 {V6_HEX} {HMAC64_HEX}",
                 {"length": 28, "addr_id": 9, "addr": V6, "port": None}, id="v6-28"),
    pytest.param(MPAddAddr(addr_id=9, addr=V6, port=443, hmac=HMAC64),
                 f"1e1e 3009 {V6_HEX} 01bb {HMAC64_HEX}",
                 {"length": 30, "addr": V6, "port": 443, "hmac": HMAC64}, id="v6-port-30"),
    pytest.param(MPAddAddr(flags="E", addr_id=1, addr=V4), f"1e08 3101 {V4_HEX}",
                 {"length": 8, "echo": True, "hmac": None, "port": None}, id="echo-v4-8"),
    pytest.param(MPAddAddr(flags="E", addr_id=1, addr=V4, port=8080),
                 f"1e0a 3101 {V4_HEX} 1f90",
                 {"length": 10, "echo": True, "port": 8080, "hmac": None}, id="echo-v4-port-10"),
    pytest.param(MPAddAddr(flags="E", addr_id=2, addr=V6), f"1e14 3102 {V6_HEX}",
                 {"length": 20, "echo": True, "addr": V6}, id="echo-v6-20"),
    pytest.param(MPAddAddr(flags="E", addr_id=2, addr=V6, port=8080),
                 f"1e16 3102 {V6_HEX} 1f90",
                 {"length": 22, "echo": True, "addr": V6, "port": 8080}, id="echo-v6-port-22"),
])
def test_add_addr_v1(layer: MPAddAddr, expected: str, fields: dict[str, Any]) -> None:
    assert_pair(layer, expected, MPAddAddr,
                {"subtype": "ADD_ADDR", "version": 1, "echo": False, **fields})


@pytest.mark.parametrize(("layer", "expected", "fields"), [
    pytest.param(MPAddAddrV0(addr_id=1, addr=V4), f"1e08 3401 {V4_HEX}",
                 {"length": 8, "ipver": 4, "port": None}, id="v4-8"),
    pytest.param(MPAddAddrV0(addr_id=1, addr=V4, port=8080), f"1e0a 3401 {V4_HEX} 1f90",
                 {"length": 10, "ipver": 4, "port": 8080}, id="v4-port-10"),
    pytest.param(MPAddAddrV0(addr_id=3, addr=V6), f"1e14 3603 {V6_HEX}",
                 {"length": 20, "ipver": 6, "addr": V6}, id="v6-20"),
    pytest.param(MPAddAddrV0(addr_id=3, addr=V6, port=80), f"1e16 3603 {V6_HEX} 0050",
                 {"length": 22, "ipver": 6, "port": 80}, id="v6-port-22"),
])
def test_add_addr_v0(layer: MPAddAddrV0, expected: str, fields: dict[str, Any]) -> None:
    assert_pair(layer, expected, MPAddAddrV0,
                {"subtype": "ADD_ADDR", "version": 0, "hmac": None, "echo": False, **fields})


# ---------------------------------------------------------------------------------------------
# REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST, MP_EXPERIMENTAL, unknown subtypes


def test_remove_addr_one_id() -> None:
    assert_pair(MPRemoveAddr(addr_ids=[7]), "1e04 4007", MPRemoveAddr,
                {"subtype": "REMOVE_ADDR", "length": 4, "addr_ids": [7]})


def test_remove_addr_several_ids() -> None:
    assert_pair(MPRemoveAddr(addr_ids=[1, 2, 3, 255]), "1e07 4001 0203ff", MPRemoveAddr,
                {"length": 7, "addr_ids": [1, 2, 3, 255]})


@pytest.mark.parametrize(("layer", "expected", "fields"), [
    pytest.param(MPPrio(flags="B"), "1e03 51", {"length": 3, "backup": True, "addr_id": None},
                 id="v1-backup-3"),
    pytest.param(MPPrio(flags=0), "1e03 50", {"length": 3, "backup": False, "addr_id": None},
                 id="v1-regular-3"),
    pytest.param(MPPrio(flags="B", addr_id=4), "1e04 5104",
                 {"length": 4, "backup": True, "addr_id": 4}, id="v0-with-id-4"),
])
def test_mp_prio(layer: MPPrio, expected: str, fields: dict[str, Any]) -> None:
    assert_pair(layer, expected, MPPrio, {"subtype": "MP_PRIO", **fields})


def test_mp_fail() -> None:
    assert_pair(MPFail(dsn=0x0102030405060708), "1e0c 6000 0102030405060708", MPFail,
                {"subtype": "MP_FAIL", "length": 12, "dsn": 0x0102030405060708})


def test_mp_fastclose() -> None:
    assert_pair(MPFastclose(receiver_key=KEY_B), f"1e0c 7000 {KEY_B_HEX}", MPFastclose,
                {"subtype": "MP_FASTCLOSE", "length": 12, "receiver_key": KEY_B})


@pytest.mark.parametrize(("letter", "nibble"), [("U", "8"), ("V", "4"), ("W", "2"), ("T", "1")])
def test_mp_tcprst_flag_by_letter(letter: str, nibble: str) -> None:
    """U V W T fill the low nibble of the third octet, U first (RFC 8684 figure 15)."""
    assert_pair(MPTcpRst(flags=letter, reason=0), f"1e04 8{nibble}00", MPTcpRst,
                {"subtype": "MP_TCPRST", "length": 4, "flags": letter})


# RFC 8684 section 3.6, written out here rather than imported from the code under test.
RFC_TCPRST_REASONS = [
    (0x00, "Unspecified error"),
    (0x01, "MPTCP-specific error"),
    (0x02, "Lack of resources"),
    (0x03, "Administratively prohibited"),
    (0x04, "Too much outstanding data"),
    (0x05, "Unacceptable performance"),
    (0x06, "Middlebox interference"),
]


@pytest.mark.parametrize(("code", "name"), RFC_TCPRST_REASONS)
def test_mp_tcprst_reason_by_name(code: int, name: str) -> None:
    decoded = assert_pair(MPTcpRst(flags="T", reason=code), f"1e04 81{code:02x}", MPTcpRst,
                          {"flags": "T", "reason": code, "reason_name": name})
    assert decoded.reason_name == name
    assert name in decoded.summary()
    assert bytes(MPTcpRst(flags="T", reason=name)) == h(f"1e04 81{code:02x}")


def test_mp_tcprst_unassigned_reason_is_kept() -> None:
    decoded = assert_pair(MPTcpRst(reason=0x42), "1e04 8042", MPTcpRst, {"reason": 0x42})
    assert "unknown" in decoded.reason_name


def test_mp_experimental() -> None:
    assert_pair(MPExperimental(nibble=0xA, data=b"\x01\x02\x03"), "1e06 fa01 0203",
                MPExperimental, {"subtype": "MP_EXPERIMENTAL", "length": 6, "nibble": 0xA,
                                 "data": "010203"})


@pytest.mark.parametrize("subtype", range(9, 15))
def test_unknown_subtype_kept_byte_for_byte(subtype: int) -> None:
    raw = h(f"1e07 {subtype:x}5de adbeef")
    decoded = MPTCPOption(raw)
    assert type(decoded) is MPUnknown
    assert bytes(decoded) == raw
    assert decoded.as_dict() == {"subtype": "UNKNOWN", "length": 7, "subtype_id": subtype,
                                 "raw": raw.hex()}
    rebuilt = MPUnknown(subtype=subtype, nibble=5, data=h("deadbeef"))
    assert bytes(rebuilt) == raw


def test_unknown_subtype_as_dict_raw_is_the_option_only() -> None:
    """Bytes after the option's declared length are not part of it (here: a NOP, an EOL)."""
    option = h("1e07 95de adbeef")
    decoded = MPTCPOption(option + b"\x01\x00")
    assert type(decoded) is MPUnknown
    assert decoded.as_dict()["raw"] == option.hex()


# ---------------------------------------------------------------------------------------------
# Malformed options: kept as they came, with a reason


@pytest.mark.parametrize(("raw_hex", "words"), [
    pytest.param("1e0c 1102 a35d", ["12", "6"], id="truncated-join"),
    pytest.param(f"1e14 0101 {KEY_A_HEX}", ["20", "12"], id="truncated-capable"),
    pytest.param("1e03 20", ["DSS", "3"], id="dss-3-bytes"),
    pytest.param("1e0d 1102 a35d6d82 deadbeef 00", ["MP_JOIN", "13"], id="join-13"),
    pytest.param("1e0c 2001 00000000 00000005", ["DSS", "12"], id="dss-length-vs-flags-A"),
    pytest.param("1e0f 2004 0a0b0c0d 00000100 020000", ["DSS", "15"], id="dss-length-vs-flags-M"),
    pytest.param("1e0a 2005 00000005 0000", ["DSS", "10"], id="dss-ack-map-too-short"),
    pytest.param("1e11 3001 c0000201 a1a2a3a4a5a6a7a8 00", ["ADD_ADDR", "17"], id="add-addr-17"),
    pytest.param(f"1e10 3101 {V4_HEX} {HMAC64_HEX}", ["ADD_ADDR", "16"],
                 id="add-addr-echo-with-hmac"),
    pytest.param(f"1e14 3401 {V4_HEX} {'00' * 12}", ["ADD_ADDR", "20"], id="add-addr-v0-ipver4-20"),
    pytest.param("1e08 0101 00000000", ["MP_CAPABLE", "8"], id="capable-8"),
    pytest.param("1e08 6000 00000000", ["MP_FAIL", "8"], id="fail-8"),
    pytest.param("1e0b 7000 00000000 000000", ["MP_FASTCLOSE", "11"], id="fastclose-11"),
    pytest.param("1e05 8100 ff", ["MP_TCPRST", "5"], id="tcprst-5"),
    pytest.param("1e05 5100 ff", ["MP_PRIO", "5"], id="prio-5"),
    pytest.param("1e03 40", ["REMOVE_ADDR"], id="remove-addr-no-id"),
    pytest.param("1e02 00", ["2"], id="length-2"),
    pytest.param("1e00 20", ["0"], id="length-0"),
    pytest.param("1e01", [], id="two-bytes"),
    pytest.param("1e", [], id="one-byte"),
])
def test_malformed(raw_hex: str, words: list[str]) -> None:
    raw = h(raw_hex)
    decoded = MPTCPOption(raw)
    assert type(decoded) is MPMalformed
    assert bytes(decoded) == raw
    reason = decoded.reason
    assert isinstance(reason, str) and len(reason) > 10 and reason != "well-formed"
    for word in words:
        assert re.search(rf"\b{re.escape(word)}\b", reason), f"{word!r} not in {reason!r}"
    d = decoded.as_dict()
    assert d["malformed"] is True and d["raw"] == raw.hex() and d["reason"] == reason
    assert "malformed" in decoded.summary()


@pytest.mark.parametrize(("cls", "raw_hex"), [
    pytest.param(MPJoin, "1e08 2001 00000005", id="join-given-dss"),
    pytest.param(MPDSS, "1e0d 1102 a35d6d82 deadbeef 00", id="dss-given-join-13"),
    pytest.param(MPAddAddr, "1e30 201f", id="add-addr-truncated"),
    pytest.param(MPCapable, "1e", id="capable-one-byte"),
])
def test_subtype_class_dissects_like_mptcp_option(cls: type[MPTCPOption], raw_hex: str) -> None:
    """``MPJoin(raw)`` is Scapy's usual way to dissect as one layer; it must not raise, and
    bytes that are not that option become MPMalformed, as with ``MPTCPOption(raw)``."""
    raw = h(raw_hex)
    decoded = cls(raw)
    assert type(decoded) is MPMalformed
    assert bytes(decoded) == raw


# ---------------------------------------------------------------------------------------------
# Scapy integration: kind 30 in TCPOptionsField


def _tcp_header(options: bytes, **fields: int) -> bytes:
    """A 20-byte TCP header (sport 1234, dport 80, SYN) with ``options`` appended."""
    assert len(options) % 4 == 0
    dataofs = 5 + len(options) // 4
    header = h(f"04d2 0050 00000001 00000000 {dataofs:x}002 ffff 0000 0000")
    return header + options


def _ip_wire(tcp: bytes) -> bytes:
    return bytes(IP(src="192.0.2.1", dst="198.51.100.1", proto=6) / tcp)


def test_ip_wire_decodes_mptcp_options() -> None:
    options = h("020405b4 1e0c 1102 a35d6d82 deadbeef 0101 0402")
    tcp = IP(_ip_wire(_tcp_header(options)))[TCP]
    names = [name for name, _ in tcp.options]
    assert names == ["MSS", "MPTCP", "NOP", "NOP", "SAckOK"]
    name, join = tcp.options[1]
    assert name == "MPTCP" and type(join) is MPJoin
    assert join.as_dict() == {"subtype": "MP_JOIN", "length": 12, "backup": True, "addr_id": 2,
                              "token": 0xA35D6D82, "nonce": 0xDEADBEEF}
    assert mptcp_options(tcp) == [join]


def test_tcp_builds_mptcp_layer_exact_bytes() -> None:
    tcp = TCP(sport=1234, dport=80, seq=1, flags="S", window=0xFFFF, chksum=0,
              options=[("MSS", 1460), ("MPTCP", MPJoin(flags="B", addr_id=2, token=0x1234,
                                                         nonce=1)), ("NOP", None)])
    wire = bytes(tcp)
    # 4 (MSS) + 12 (MP_JOIN) + 1 (NOP) = 17 bytes, padded with zeros to 20: dataofs 10.
    assert wire.hex() == _tcp_header(h("020405b4 1e0c 1102 00001234 00000001 01000000")).hex()
    assert TCP(wire).dataofs == 10


def test_tcp_builds_mptcp_layer_by_kind_number() -> None:
    wire = bytes(TCP(chksum=0, options=[(30, MPPrio(flags="B"))]))
    assert wire[20:] == h("1e0351 00")
    assert wire[12] >> 4 == 6


def test_tcp_raw_mptcp_value_still_works() -> None:
    tcp = TCP(chksum=0, options=[("MPTCP", h("2001 00000005"))])
    assert bytes(tcp)[20:] == h("1e08 2001 00000005")
    decoded = TCP(bytes(tcp)).options
    assert [n for n, _ in decoded] == ["MPTCP"]
    assert type(decoded[0][1]) is MPDSS and decoded[0][1].data_ack == 5


def test_tcp_raw_value_next_to_a_layer() -> None:
    tcp = TCP(chksum=0, options=[("MPTCP", h("2001 00000005")), ("MPTCP", MPPrio(flags="B"))])
    assert bytes(tcp)[20:] == h("1e08 2001 00000005 1e0351 00")


def test_several_mptcp_options_in_one_header() -> None:
    dss = MPDSS(data_ack=5, dsn=0x0A0B0C0D, ssn=1, data_level_len=10)
    echo = MPAddAddr(flags="E", addr_id=1, addr=V4)
    tcp = TCP(sport=1234, dport=80, seq=1, flags="S", window=0xFFFF, chksum=0,
              options=[("MPTCP", dss), ("NOP", None), ("NOP", None), ("MPTCP", echo)])
    options = h(f"1e12 2005 00000005 0a0b0c0d 00000001 000a 0101 1e08 3101 {V4_HEX}")
    assert bytes(tcp).hex() == _tcp_header(options).hex()
    decoded = IP(_ip_wire(bytes(tcp)))[TCP]
    got = mptcp_options(decoded)
    assert [type(o) for o in got] == [MPDSS, MPAddAddr]
    assert [o.as_dict() for o in got] == [dss.as_dict(), echo.as_dict()]


def test_truncated_mptcp_option_at_the_end() -> None:
    # MSS, NOP, then an MP_JOIN SYN declaring 12 bytes with only 7 left in the options area.
    options = h("020405b4 01 1e0c1102 a35d6d")
    tcp = IP(_ip_wire(_tcp_header(options)))[TCP]
    assert tcp.options[0] == ("MSS", 1460)
    assert tcp.options[1] == ("NOP", None)
    name, bad = tcp.options[2]
    assert name == "MPTCP" and type(bad) is MPMalformed
    assert bytes(bad) == h("1e0c1102 a35d6d")
    assert "12" in bad.reason and "7" in bad.reason


def test_malformed_mptcp_in_the_middle_does_not_stop_decoding() -> None:
    options = h("1e04 2001  1e08 2001 00000007  020405b4")
    tcp = TCP(_tcp_header(options))
    kinds = [(n, type(v).__name__ if isinstance(v, Packet) else v) for n, v in tcp.options]
    assert kinds == [("MPTCP", "MPMalformed"), ("MPTCP", "MPDSS"), ("MSS", 1460)]
    assert tcp.options[1][1].data_ack == 7


def test_dissected_header_rebuilds_identically() -> None:
    options = h("020405b4 1e0c 1102 a35d6d82 deadbeef 01 1e03 51")
    wire = _tcp_header(options)
    tcp = TCP(wire)
    tcp.clear_cache()
    assert bytes(tcp).hex() == wire.hex()


def _scapy_probe() -> dict[str, Any]:
    """Repr, show and bytes of headers using every option Scapy knows, and of built headers.

    Self-contained: its source also runs in a pristine interpreter, without mptcplab.
    """
    import struct
    import sys

    from scapy.layers.inet import IP, TCP

    def hx(text: str) -> bytes:
        return bytes.fromhex(text.replace(" ", ""))

    def header(options: bytes) -> bytes:
        pad = b"\x00" * (-len(options) % 4)
        dataofs = 5 + (len(options) + len(pad)) // 4
        return (hx("04d2 0050 00000001 00000002") + bytes([dataofs << 4, 0x12])
                + hx("ffff 0000 0000") + options + pad)

    def attempt(fn: Any) -> str:
        try:
            return fn()
        except (struct.error, TypeError, ValueError) as e:  # Scapy's own, the same in both
            return "raised " + type(e).__name__

    wires = [
        "020405b4",                                   # MSS
        "030307",                                     # WScale
        "0402",                                       # SAckOK
        "050a 00000001 00000002",                     # SAck, one block
        "0512 00000001 00000002 00000003 00000004",   # SAck, two blocks
        "080a 00000001 00000002",                     # Timestamp
        "1312 000102030405060708090a0b0c0d0e0f",      # MD5
        "1c04 8001",                                  # UTO
        "1d08 0102 aabbccdd",                         # AO
        "220a 0102030405060708",                      # TFO
        "2202",                                       # TFO cookie request
        "0e03 01",                                    # AltChkSum
        "01 01 00 ffff",                              # NOP NOP EOL and bytes after
        "06 06 01020304",                             # unknown kind 6
        "fd06 1234 abcd",                             # experimental kind 253
        "fe04 f989",                                  # experimental kind 254
        "63 05 616263",                               # unknown kind 99
        "0201",                                       # length below 2
        "020a 05b4",                                  # length past the end
        "1c01",                                       # UTO with length 1
        "020405b4 01 030302 0402 080a 0000000a 0000000b",
    ]
    builds = [
        [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b"")],
        [("Timestamp", (10, 11)), ("EOL", None)],
        [("SAck", (1, 2, 3, 4))],
        [("MD5", b"\x00" * 16)],
        [("UTO", 0x8001)],
        [("TFO", (1, 2))],
        [("TFO", b"")],
        [(99, b"abc"), (253, b"\x12\x34"), (6, b"")],
        [("NOP", None), ("NOP", None), ("EOL", None)],
        [("NoSuchOption", b"x"), ("MSS", 536)],
    ]
    out: dict[str, Any] = {"wires": [], "builds": []}
    for text in wires:
        tcp = TCP(header(hx(text)))

        def rebuilt(tcp: Any = tcp) -> str:
            copy = tcp.copy()
            copy.clear_cache()
            return bytes(copy).hex()

        ip = IP(bytes(IP(src="192.0.2.1", dst="198.51.100.1", proto=6) / tcp))
        out["wires"].append([text, repr(tcp.options), repr(tcp), bytes(tcp).hex(),
                             attempt(rebuilt), repr(ip[TCP].options), ip[TCP].summary(),
                             tcp.show(dump=True)])
    for opts in builds:
        tcp = TCP(chksum=0, options=opts)
        out["builds"].append([repr(opts), attempt(lambda tcp=tcp: bytes(tcp).hex()),
                              attempt(lambda tcp=tcp: repr(tcp))])
    out["mptcplab_loaded"] = "mptcplab" in sys.modules
    return out


def test_other_options_behave_as_in_pristine_scapy() -> None:
    """Every non-MPTCP option decodes, prints and builds exactly as Scapy does on its own."""
    code = ("from typing import Any\nimport json\n" + inspect.getsource(_scapy_probe)
            + "\nprint(json.dumps(_scapy_probe()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    pristine = json.loads(proc.stdout)
    assert pristine["mptcplab_loaded"] is False, "the reference run must not load mptcplab"
    hooked = json.loads(json.dumps(_scapy_probe()))
    assert hooked["mptcplab_loaded"] is True

    assert len(hooked["wires"]) == len(pristine["wires"])
    assert len(hooked["builds"]) == len(pristine["builds"])
    differences = [
        f"{what} {theirs[0]}: pristine {theirs[i]!r}, with mptcplab {ours[i]!r}"
        for what, key in (("dissecting", "wires"), ("building", "builds"))
        for ours, theirs in zip(hooked[key], pristine[key])
        for i in range(1, len(theirs)) if ours[i] != theirs[i]
    ]
    assert not differences, "\n".join(differences)


def test_install_is_idempotent() -> None:
    field = inet.TCPOptionsField
    before = (field.m2i, field.i2m, field.i2repr)
    install()
    install()
    assert (field.m2i, field.i2m, field.i2repr) == before
    options = h("1e08 2001 00000005 0103 0300")
    tcp = TCP(_tcp_header(options))
    name, value = tcp.options[0]
    assert name == "MPTCP" and type(value) is MPDSS
    assert isinstance(value.payload, NoPayload)
    assert bytes(value) == h("1e08 2001 00000005")
    assert bytes(TCP(chksum=0, options=[("MPTCP", value)]))[20:] == h("1e08 2001 00000005")


def test_install_survives_module_reload() -> None:
    """A fresh interpreter that reloads the hook module and installs again decodes the same."""
    code = (
        "import importlib\n"
        "import mptcplab.layers.tcp_hook as hook\n"
        "from scapy.layers import inet\n"
        "from scapy.layers.inet import TCP\n"
        "first = inet.TCPOptionsField.m2i\n"
        "importlib.reload(hook); hook.install(); hook.install()\n"
        "assert inet.TCPOptionsField.m2i is first\n"
        "wire = bytes.fromhex('04d20050000000010000000070022000000000001e08200100000005')\n"
        "print(type(TCP(wire).options[0][1]).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MPDSS"


# ---------------------------------------------------------------------------------------------
# Reading like a textbook: summary() and show()


def test_join_summary() -> None:
    text = MPJoin(flags="B", addr_id=2, token=0x1234, nonce=1).summary()
    assert "MP_JOIN SYN B=1 id=2 token=0x" in text
    assert re.search(r"token=0x0*1234\b", text)
    assert re.search(r"nonce=0x0*1\b", text)


@pytest.mark.parametrize(("layer", "words"), [
    pytest.param(MPCapable(version=1, flags="AH"), ["MP_CAPABLE", "v1", "SYN"], id="capable"),
    pytest.param(MPCapable(version=0, flags="H", sender_key=KEY_A),
                 ["MP_CAPABLE", "v0", "0x0102030405060708"], id="capable-v0"),
    pytest.param(MPJoin(addr_id=5, truncated_hmac=0x0011223344556677, nonce=3),
                 ["MP_JOIN SYN-ACK", "id=5", "0x0011223344556677"], id="join-synack"),
    pytest.param(MPJoin(hmac=b"\xab" * 20), ["MP_JOIN ACK", "ab" * 20], id="join-ack"),
    pytest.param(MPDSS(data_ack=5, dsn=9, ssn=1, data_level_len=100),
                 ["DSS", "data_ack=5", "dsn=9", "ssn=1", "len=100"], id="dss"),
    pytest.param(MPAddAddr(flags="E", addr_id=1, addr=V4, port=8080),
                 ["ADD_ADDR echo", "id=1", "192.0.2.1:8080"], id="add-addr-echo"),
    pytest.param(MPAddAddr(addr_id=1, addr=V6, port=8080, hmac=HMAC64),
                 ["ADD_ADDR", "[2001:db8::1]:8080", "0xa1a2a3a4a5a6a7a8"], id="add-addr-v6"),
    pytest.param(MPRemoveAddr(addr_ids=[1, 2]), ["REMOVE_ADDR", "1,2"], id="remove-addr"),
    pytest.param(MPPrio(flags="B"), ["MP_PRIO", "B=1"], id="prio"),
    pytest.param(MPFail(dsn=77), ["MP_FAIL", "77"], id="fail"),
    pytest.param(MPFastclose(receiver_key=KEY_B), ["MP_FASTCLOSE", "0x1112131415161718"],
                 id="fastclose"),
    pytest.param(MPTcpRst(flags="T", reason=6), ["MP_TCPRST", "T", "Middlebox interference"],
                 id="tcprst"),
])
def test_summaries(layer: MPTCPOption, words: list[str]) -> None:
    text = layer.summary()
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


def test_tcp_show_contains_option_summaries() -> None:
    join = MPJoin(flags="B", addr_id=2, token=0x1234, nonce=1)
    dss = MPDSS(data_ack=5)
    tcp = TCP(bytes(TCP(chksum=0, options=[("MSS", 1460), ("MPTCP", join), ("MPTCP", dss)])))
    shown = tcp.show(dump=True)
    assert "MP_JOIN SYN B=1 id=2" in shown
    assert "DSS data_ack=5" in shown
    assert "1460" in shown
    assert "MP_JOIN SYN B=1 id=2" in repr(tcp)


def test_layer_show_lists_rfc_fields() -> None:
    shown = MPTCPOption(h("1e0c 1102 a35d6d82 deadbeef")).show(dump=True)
    for name in ("addr_id", "token", "nonce"):
        assert name in shown


# -- values a field cannot hold, letters that are no flag, options too long ---------------------

@pytest.mark.parametrize("make, words", [
    pytest.param(lambda: MPCapable(version=20), ["version=20", "4 bits", "0-15"], id="version"),
    pytest.param(lambda: MPJoin(addr_id=300), ["addr_id=300", "8 bits"], id="addr-id"),
    pytest.param(lambda: MPDSS(dsn=1 << 64), ["dsn=", "64 bits"], id="dsn"),
    pytest.param(lambda: MPTcpRst(reason=256), ["reason=256", "8 bits"], id="reason"),
    pytest.param(lambda: MPJoin(flags="X"), ["flags='X'", "'X'", "'B'"], id="join-flags"),
    pytest.param(lambda: MPCapable(flags="AZ"), ["'Z'", "ABCDEFGH"], id="capable-flags"),
])
def test_impossible_values_are_errors_that_say_why(make: Any, words: list[str]) -> None:
    # Scapy would keep the low bits (version 20 goes out as 4) or fail deep inside its
    # FlagValue with "substring not found".
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_dsn_too_big_for_the_4_bytes_the_flags_ask_for_is_an_error() -> None:
    with pytest.raises(ValueError, match="dsn=.* 32 bits"):
        bytes(MPDSS(flags="M", dsn=1 << 40, ssn=1, data_level_len=1))


def test_whole_option_bytes_are_written_once() -> None:
    join = MPJoin(flags="B", addr_id=2, token=0xA35D6D82, nonce=7)
    whole = bytes(join)
    as_layer = bytes(TCP(chksum=0, options=[("MPTCP", join)]))
    as_whole = bytes(TCP(chksum=0, options=[("MPTCP", whole)]))
    as_value = bytes(TCP(chksum=0, options=[("MPTCP", whole[2:])]))   # Scapy's own habit
    assert as_whole == as_layer == as_value
    assert TCP(as_whole).options[0][1].token == 0xA35D6D82


def test_options_beyond_40_bytes_draw_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    two = [("MPTCP", MPJoin(hmac=b"x" * 20)), ("MPTCP", MPJoin(hmac=b"y" * 20))]
    scapy_log = logging.getLogger("scapy")        # Scapy's loggers do not propagate
    scapy_log.addHandler(caplog.handler)
    try:
        bytes(TCP(options=two))
        warned = [r.getMessage() for r in caplog.records if "40" in r.getMessage()]
        assert len(warned) == 1 and "48 bytes" in warned[0]
        caplog.clear()
        bytes(TCP(options=two[:1]))
        assert not caplog.records
    finally:
        scapy_log.removeHandler(caplog.handler)


@pytest.mark.parametrize("raw, tcp_flags, stage", [
    ("1e04 0181", "S", "SYN"),
    ("1e0c 0181 0102030405060708", "SA", "SYN-ACK"),
    ("1e0c 0181 0102030405060708", None, "SYN-ACK"),          # v1: 12 bytes only on SYN-ACK
    ("1e0c 0081 0102030405060708", "S", "SYN"),               # v0: the SYN has 12 too
    ("1e0c 0081 0102030405060708", "SA", "SYN-ACK"),
    ("1e0c 0081 0102030405060708", None, "SYN or SYN-ACK"),
])
def test_mp_capable_says_which_step_it_is(raw: str, tcp_flags: str | None, stage: str) -> None:
    opt = MPTCPOption(h(raw))
    text = describe(opt.as_dict(), tcp_flags)
    assert text.split(" flags=")[0].endswith(f" {stage}"), text
    if tcp_flags is None:
        assert opt.summary() == text
