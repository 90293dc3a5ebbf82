"""The MPTCP crypto (``mptcplab.crypto``) and the crafting helpers (``layers/craft.py``).

Every expectation is computed here, independently, with ``hashlib``/``hmac`` and a plain 16-bit
word loop, from the RFC 8684 definitions, or is a published value.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcplab import crypto
from mptcplab.layers import MPDSS, MPAddAddr, MPCapable, MPJoin, MPTCPOption, craft

KEY_A = 0x29A6C86981AD933C
KEY_B = 0x1FDB5DF328BC3DEF
NONCE_A = 0x9D5E5B3B
NONCE_B = 0x7E6A4B12


def kb(key: int) -> bytes:
    return key.to_bytes(8, "big")


# ---------------------------------------------------------------------------------------------
# Token and IDSN (RFC 8684 section 3.1)


@pytest.mark.parametrize(("key", "token", "idsn"), [
    (0x29A6C86981AD933C, 0xA35D6D82, 11713449205243392241),
    (0x1FDB5DF328BC3DEF, 0x239FBDB0, 14413541604287230029),
])
def test_token_and_idsn_known_v1_values(key: int, token: int, idsn: int) -> None:
    assert crypto.key_token(key) == token
    assert crypto.key_idsn(key) == idsn
    assert crypto.token_and_idsn(key) == (token, idsn)
    assert crypto.key_token(kb(key)) == token, "the 8 key bytes work as well as the integer"


@pytest.mark.parametrize("key", [0, 1, KEY_A, KEY_B, 2**64 - 1])
@pytest.mark.parametrize("version", [0, 1])
def test_token_and_idsn_sizes_and_definition(key: int, version: int) -> None:
    digest = hashlib.new("sha1" if version == 0 else "sha256", kb(key)).digest()
    token, idsn = crypto.token_and_idsn(key, version)
    assert 0 <= token < 2**32 and 0 <= idsn < 2**64
    assert token == int.from_bytes(digest[:4], "big")      # most significant 32 bits
    assert idsn == int.from_bytes(digest[-8:], "big")      # least significant 64 bits
    assert crypto.key_token(key, version) == token
    assert crypto.key_idsn(key, version) == idsn


def test_v0_and_v1_differ() -> None:
    assert crypto.key_token(KEY_A, 0) != crypto.key_token(KEY_A, 1)
    assert crypto.key_idsn(KEY_A, 0) != crypto.key_idsn(KEY_A, 1)
    assert crypto.join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B, 0) \
        != crypto.join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B, 1)


@pytest.mark.parametrize("key", [-1, 2**64, b"\x01" * 7, b"\x01" * 9, b""])
def test_bad_key_sizes_raise(key: int | bytes) -> None:
    with pytest.raises(ValueError):
        crypto.key_token(key)
    with pytest.raises(ValueError):
        crypto.join_hmac(key, KEY_B, 1, 2)


def test_unknown_version_raises() -> None:
    with pytest.raises(ValueError):
        crypto.key_token(KEY_A, 2)


# ---------------------------------------------------------------------------------------------
# DSS checksum (RFC 8684 section 3.3.1)


def ref_dss_checksum(dsn: int, ssn: int, data_level_len: int, payload: bytes,
                     checksum: int = 0) -> int:
    """The TCP checksum algorithm, word by word, over the DSS pseudo-header and the data."""
    data = (dsn.to_bytes(8, "big") + ssn.to_bytes(4, "big") + data_level_len.to_bytes(2, "big")
            + checksum.to_bytes(2, "big") + payload)
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_dss_checksum_known_value() -> None:
    # Words: 0000 0000 0000 0001 | 0000 0001 | 0001 | 0000 | 0100 (0x01 padded): sum 0x0103.
    assert crypto.dss_checksum(1, 1, 1, b"\x01") == 0xFEFC


@pytest.mark.parametrize("payload", [b"", b"x", b"ab", b"hello", bytes(range(256)) * 3 + b"!",
                                     b"\xff" * 1001, b"\x00" * 10])
def test_dss_checksum_matches_word_loop(payload: bytes) -> None:
    dsn, ssn = 0x0123456789ABCDEF, 0x89ABCDEF
    got = crypto.dss_checksum(dsn, ssn, len(payload), payload)
    assert got == ref_dss_checksum(dsn, ssn, len(payload), payload)
    assert crypto.dss_checksum_ok(dsn, ssn, len(payload), payload, got)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
       st.binary(max_size=200))
def test_dss_checksum_agrees_with_word_loop(dsn: int, ssn: int, dll: int,
                                            payload: bytes) -> None:
    got = crypto.dss_checksum(dsn, ssn, dll, payload)
    assert got == ref_dss_checksum(dsn, ssn, dll, payload)
    assert crypto.dss_checksum_ok(dsn, ssn, dll, payload, got)
    # The receiver's check: the sum over everything, checksum included, is 0xffff.
    assert ref_dss_checksum(dsn, ssn, dll, payload, got) in (0, 0xFFFF)


@pytest.mark.parametrize("payload", [b"odd", b"even", b"some data in a mapping!", b"\x00"])
def test_dss_checksum_detects_changes(payload: bytes) -> None:
    dsn, ssn, dll = 0x1122334455667788, 1000, len(payload)
    csum = crypto.dss_checksum(dsn, ssn, dll, payload)
    assert crypto.dss_checksum_ok(dsn, ssn, dll, payload, csum)
    for i in range(len(payload)):
        flipped = payload[:i] + bytes([payload[i] ^ 0x01]) + payload[i + 1:]
        assert not crypto.dss_checksum_ok(dsn, ssn, dll, flipped, csum)
    for bit in (0, 31, 32, 63):
        assert not crypto.dss_checksum_ok(dsn ^ (1 << bit), ssn, dll, payload, csum)
    assert not crypto.dss_checksum_ok(dsn, ssn + 1, dll, payload, csum)
    assert not crypto.dss_checksum_ok(dsn, ssn, dll + 1, payload, csum)
    assert not crypto.dss_checksum_ok(dsn, ssn, dll, payload, csum ^ 0x0100)


def test_dss_checksum_odd_length_pads_with_zero() -> None:
    dsn, ssn = 5, 6
    assert crypto.dss_checksum(dsn, ssn, 3, b"abc") == ref_dss_checksum(dsn, ssn, 3, b"abc\x00")
    assert crypto.dss_checksum(dsn, ssn, 3, b"abc") != ref_dss_checksum(dsn, ssn, 3, b"\x00abc")


# ---------------------------------------------------------------------------------------------
# expand_dsn: a 32-bit DSN back to 64 bits


@pytest.mark.parametrize(("dsn32", "reference", "expected"), [
    pytest.param(0x1234, 0x5_0000_1000, 0x5_0000_1234, id="same-epoch"),
    pytest.param(0x0000_0005, 0x1_FFFF_FFF0, 0x2_0000_0005, id="wraps-forward"),
    pytest.param(0xFFFF_FFF0, 0x2_0000_0005, 0x1_FFFF_FFF0, id="wraps-backward"),
    pytest.param(0x0000_0003, 0xFFFF_FFFF_FFFF_FFF0, 0x3, id="wraps-past-2**64"),
    pytest.param(0xFFFF_FFF0, 0x5, 0xFFFF_FFFF_FFFF_FFF0, id="wraps-below-0"),
    pytest.param(0xDEAD_BEEF, 0x7_DEAD_BEEF, 0x7_DEAD_BEEF, id="equal"),
])
def test_expand_dsn(dsn32: int, reference: int, expected: int) -> None:
    assert crypto.expand_dsn(dsn32, reference) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_expand_dsn_is_nearest(dsn32: int, reference: int) -> None:
    got = crypto.expand_dsn(dsn32, reference)
    assert 0 <= got < 2**64
    assert got & 0xFFFFFFFF == dsn32
    distance = (got - reference) % 2**64
    assert min(distance, 2**64 - distance) <= 2**31


# ---------------------------------------------------------------------------------------------
# ADD_ADDR HMAC (RFC 8684 section 3.4.1)


def ref_add_addr_hmac(sender_key: int, receiver_key: int, addr_id: int, addr: str,
                      port: int | None) -> int:
    """Rightmost 64 bits of HMAC-SHA256(Key = sender || receiver, Msg = id || addr || port)."""
    message = bytes([addr_id]) + ipaddress.ip_address(addr).packed \
        + (port if port is not None else 0).to_bytes(2, "big")
    digest = hmac.new(kb(sender_key) + kb(receiver_key), message, hashlib.sha256).digest()
    return int.from_bytes(digest[-8:], "big")


@pytest.mark.parametrize(("addr", "port"), [
    ("192.0.2.1", None), ("192.0.2.1", 8080), ("2001:db8::1", None), ("2001:db8::1", 443),
])
def test_add_addr_hmac(addr: str, port: int | None) -> None:
    got = crypto.add_addr_hmac(KEY_A, KEY_B, 3, addr, port)
    assert got == ref_add_addr_hmac(KEY_A, KEY_B, 3, addr, port)
    assert got != crypto.add_addr_hmac(KEY_B, KEY_A, 3, addr, port), "key order matters"
    assert got != crypto.add_addr_hmac(KEY_A, KEY_B, 4, addr, port)


def test_add_addr_hmac_absent_port_is_port_zero() -> None:
    assert crypto.add_addr_hmac(KEY_A, KEY_B, 1, "10.0.0.2") \
        == crypto.add_addr_hmac(KEY_A, KEY_B, 1, "10.0.0.2", 0)
    assert crypto.add_addr_hmac(KEY_A, KEY_B, 1, "10.0.0.2") \
        != crypto.add_addr_hmac(KEY_A, KEY_B, 1, "10.0.0.2", 1)


# ---------------------------------------------------------------------------------------------
# MP_JOIN HMACs (RFC 8684 section 3.2)


def ref_join_digest(key_first: int, key_second: int, nonce_first: int, nonce_second: int,
                    algo: str = "sha256") -> bytes:
    return hmac.new(kb(key_first) + kb(key_second),
                    nonce_first.to_bytes(4, "big") + nonce_second.to_bytes(4, "big"),
                    algo).digest()


@pytest.mark.parametrize(("version", "algo"), [(1, "sha256"), (0, "sha1")])
def test_join_hmacs(version: int, algo: str) -> None:
    # B answers A's SYN with HMAC(Key-B||Key-A, R-B||R-A), leftmost 64 bits.
    synack = crypto.join_synack_hmac(KEY_B, KEY_A, NONCE_B, NONCE_A, version)
    assert synack == int.from_bytes(ref_join_digest(KEY_B, KEY_A, NONCE_B, NONCE_A, algo)[:8],
                                    "big")
    # A's third ACK carries HMAC(Key-A||Key-B, R-A||R-B), leftmost 160 bits.
    ack = crypto.join_ack_hmac(KEY_A, KEY_B, NONCE_A, NONCE_B, version)
    assert ack == ref_join_digest(KEY_A, KEY_B, NONCE_A, NONCE_B, algo)[:20]
    assert len(ack) == 20


# ---------------------------------------------------------------------------------------------
# Crafting helpers


def _roundtrip(layer: MPTCPOption) -> MPTCPOption:
    """What the peer receives: the layer's bytes, dissected."""
    return MPTCPOption(bytes(layer))


def test_capable_handshake_steps() -> None:
    syn = _roundtrip(craft.capable())
    assert type(syn) is MPCapable and bytes(syn) == bytes.fromhex("1e040101")
    synack = _roundtrip(craft.capable(sender_key=KEY_B))
    assert synack.as_dict()["length"] == 12 and synack.sender_key == KEY_B
    ack = _roundtrip(craft.capable(sender_key=KEY_A, receiver_key=KEY_B))
    assert ack.as_dict()["length"] == 20
    assert (ack.sender_key, ack.receiver_key) == (KEY_A, KEY_B)
    v0 = _roundtrip(craft.capable(0, sender_key=KEY_A))
    assert v0.version == 0 and v0.as_dict()["length"] == 12


def test_capable_with_data_and_checksum() -> None:
    data = b"GET / HTTP/1.0\r\n\r\n"
    option = _roundtrip(craft.capable(sender_key=KEY_A, receiver_key=KEY_B, data=data,
                                      checksum=True))
    d = option.as_dict()
    assert d["length"] == 24 and "A" in d["flags"] and d["data_level_len"] == len(data)
    # The data rides the implicit mapping DSN = IDSN + 1, subflow sequence number 1.
    idsn = int.from_bytes(hashlib.sha256(kb(KEY_A)).digest()[-8:], "big")
    assert d["checksum"] == ref_dss_checksum(idsn + 1, 1, len(data), data)
    without = _roundtrip(craft.capable(sender_key=KEY_A, receiver_key=KEY_B, data=data))
    assert without.as_dict()["length"] == 22 and "checksum" not in without.as_dict()


def test_capable_with_data_needs_both_keys() -> None:
    with pytest.raises(ValueError):
        craft.capable(sender_key=KEY_A, data=b"x")


def test_join_syn_carries_peer_token() -> None:
    option = _roundtrip(craft.join_syn(peer_key=KEY_B, nonce=NONCE_A, addr_id=2, backup=True))
    assert type(option) is MPJoin
    assert option.as_dict() == {"subtype": "MP_JOIN", "length": 12, "backup": True,
                                "addr_id": 2, "token": 0x239FBDB0, "nonce": NONCE_A}


def test_join_synack_and_ack_verify() -> None:
    synack = _roundtrip(craft.join_synack(own_key=KEY_B, peer_key=KEY_A, own_nonce=NONCE_B,
                                          peer_nonce=NONCE_A, addr_id=1))
    assert synack.as_dict()["length"] == 16 and synack.nonce == NONCE_B
    assert synack.truncated_hmac == int.from_bytes(
        ref_join_digest(KEY_B, KEY_A, NONCE_B, NONCE_A)[:8], "big")
    assert craft.join_ok(synack, sender_key=KEY_B, receiver_key=KEY_A, sender_nonce=NONCE_B,
                         receiver_nonce=NONCE_A)

    ack = _roundtrip(craft.join_ack(own_key=KEY_A, peer_key=KEY_B, own_nonce=NONCE_A,
                                    peer_nonce=NONCE_B))
    assert ack.as_dict()["length"] == 24
    assert bytes(ack.hmac) == ref_join_digest(KEY_A, KEY_B, NONCE_A, NONCE_B)[:20]
    assert craft.join_ok(ack, sender_key=KEY_A, receiver_key=KEY_B, sender_nonce=NONCE_A,
                         receiver_nonce=NONCE_B)


@pytest.mark.parametrize("wrong", ["keys-swapped", "other-key", "nonces-swapped", "other-nonce"])
def test_join_wrong_keys_or_nonces_fail(wrong: str) -> None:
    synack = craft.join_synack(own_key=KEY_B, peer_key=KEY_A, own_nonce=NONCE_B,
                               peer_nonce=NONCE_A)
    ack = craft.join_ack(own_key=KEY_A, peer_key=KEY_B, own_nonce=NONCE_A, peer_nonce=NONCE_B)
    for option, keys, nonces in ((synack, (KEY_B, KEY_A), (NONCE_B, NONCE_A)),
                                 (ack, (KEY_A, KEY_B), (NONCE_A, NONCE_B))):
        if wrong == "keys-swapped":
            keys = keys[::-1]
        elif wrong == "other-key":
            keys = (keys[0] ^ 1, keys[1])
        elif wrong == "nonces-swapped":
            nonces = nonces[::-1]
        else:
            nonces = (nonces[0], nonces[1] ^ 0x80000000)
        assert not craft.join_ok(_roundtrip(option), sender_key=keys[0], receiver_key=keys[1],
                                 sender_nonce=nonces[0], receiver_nonce=nonces[1])


def test_join_ok_refuses_syn() -> None:
    with pytest.raises(ValueError):
        craft.join_ok(craft.join_syn(peer_key=KEY_B, nonce=1), sender_key=KEY_A,
                      receiver_key=KEY_B, sender_nonce=1, receiver_nonce=2)


@pytest.mark.parametrize(("addr", "port", "length", "echo_length"), [
    ("192.0.2.1", None, 16, 8), ("192.0.2.1", 8080, 18, 10),
    ("2001:db8::1", None, 28, 20), ("2001:db8::1", 8080, 30, 22),
])
def test_add_addr_craft_and_verify(addr: str, port: int | None, length: int,
                                   echo_length: int) -> None:
    announced = _roundtrip(craft.add_addr(sender_key=KEY_A, receiver_key=KEY_B, addr_id=7,
                                          addr=addr, port=port))
    assert type(announced) is MPAddAddr
    d = announced.as_dict()
    assert (d["length"], d["addr"], d["port"], d["echo"]) == (length, addr, port, False)
    assert d["hmac"] == ref_add_addr_hmac(KEY_A, KEY_B, 7, addr, port)
    assert craft.add_addr_ok(announced, sender_key=KEY_A, receiver_key=KEY_B)
    assert not craft.add_addr_ok(announced, sender_key=KEY_B, receiver_key=KEY_A)
    assert not craft.add_addr_ok(announced, sender_key=KEY_A ^ 1, receiver_key=KEY_B)

    echo = _roundtrip(craft.add_addr_echo(announced))
    e = echo.as_dict()
    assert (e["length"], e["addr_id"], e["addr"], e["port"], e["echo"], e["hmac"]) \
        == (echo_length, 7, addr, port, True, None)
    with pytest.raises(ValueError):
        craft.add_addr_ok(echo, sender_key=KEY_A, receiver_key=KEY_B)


def test_add_addr_tampered_address_fails() -> None:
    announced = craft.add_addr(sender_key=KEY_A, receiver_key=KEY_B, addr_id=7,
                               addr="192.0.2.1", port=80)
    wire = bytearray(bytes(announced))
    wire[7] ^= 0x01                                   # last octet of the address
    assert not craft.add_addr_ok(MPTCPOption(bytes(wire)), sender_key=KEY_A, receiver_key=KEY_B)
    wire = bytearray(bytes(announced))
    wire[9] ^= 0x01                                   # the port
    assert not craft.add_addr_ok(MPTCPOption(bytes(wire)), sender_key=KEY_A, receiver_key=KEY_B)


@pytest.mark.parametrize("dsn_bits", [32, 64])
def test_with_dss_checksum(dsn_bits: int) -> None:
    payload = b"mapping payload, odd length"
    dsn64 = 0x1_2345_6789 if dsn_bits == 64 else 0x0000_0000_1234_5678
    flags = "AMm" if dsn_bits == 64 else "AM"
    mapping = MPDSS(flags=flags, data_ack=1, dsn=dsn64, ssn=10, data_level_len=len(payload))
    assert "checksum" not in mapping.as_dict()
    signed = _roundtrip(craft.with_dss_checksum(mapping, payload))
    d = signed.as_dict()
    assert d["length"] == len(bytes(mapping)) + 2
    assert d["checksum"] == ref_dss_checksum(dsn64, 10, len(payload), payload)
    assert craft.dss_checksum_ok(signed, payload)
    assert not craft.dss_checksum_ok(signed, payload[:-1] + b"?")


def test_with_dss_checksum_on_a_dissected_option_and_32_bit_dsn() -> None:
    """A received 4-byte DSN needs the full 64-bit DSN for the pseudo-header."""
    payload = b"abc"
    dsn64 = 0x7_0000_0100
    received = MPTCPOption(bytes(MPDSS(dsn=dsn64 & 0xFFFFFFFF, ssn=1, data_level_len=3)))
    signed = _roundtrip(craft.with_dss_checksum(received, payload, dsn64=dsn64))
    assert signed.as_dict()["length"] == 16
    assert signed.checksum == ref_dss_checksum(dsn64, 1, 3, payload)
    assert craft.dss_checksum_ok(signed, payload, dsn64=dsn64)
    assert not craft.dss_checksum_ok(signed, payload, dsn64=dsn64 + (1 << 32))
    assert not craft.dss_checksum_ok(signed, payload)   # the low 32 bits alone are not enough


def test_dss_checksum_helpers_refuse_options_without_mapping_or_checksum() -> None:
    with pytest.raises(ValueError):
        craft.with_dss_checksum(MPDSS(data_ack=5), b"")
    with pytest.raises(ValueError):
        craft.dss_checksum_ok(MPDSS(dsn=1, ssn=1, data_level_len=1), b"x")
