"""The MPTCP protocol's crypto, as pure functions: bytes or ints in, ints or bytes out.

* key -> token and IDSN (RFC 8684 section 3.1; RFC 6824 uses SHA-1 instead of SHA-256);
* MP_JOIN HMACs (RFC 8684 section 3.2): the SYN-ACK's truncated HMAC and the third ACK's HMAC;
* the ADD_ADDR HMAC (RFC 8684 section 3.4.1);
* the DSS checksum (RFC 8684 section 3.3.1).

Keys are 64-bit integers (or their 8 big-endian bytes), nonces 32-bit integers. Version 1 is
RFC 8684 (SHA-256), version 0 is RFC 6824 (SHA-1).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import ipaddress

KeyLike = int | bytes


def key_bytes(key: KeyLike) -> bytes:
    """A 64-bit key as its 8 network-order bytes."""
    if isinstance(key, (bytes, bytearray)):
        if len(key) != 8:
            raise ValueError(f"an MPTCP key is 8 bytes, not {len(key)}")
        return bytes(key)
    if not 0 <= key < 1 << 64:
        raise ValueError(f"an MPTCP key is a 64-bit unsigned integer, not {key}")
    return key.to_bytes(8, "big")


def _hash(version: int) -> str:
    if version not in (0, 1):
        raise ValueError(f"MPTCP version {version} is neither 0 (RFC 6824) nor 1 (RFC 8684)")
    return "sha1" if version == 0 else "sha256"


def key_digest(key: KeyLike, version: int = 1) -> bytes:
    """SHA-256 (v1) or SHA-1 (v0) of the key, the source of both token and IDSN."""
    return hashlib.new(_hash(version), key_bytes(key)).digest()


def key_token(key: KeyLike, version: int = 1) -> int:
    """The connection token: the most significant 32 bits of the key's hash."""
    return int.from_bytes(key_digest(key, version)[:4], "big")


def key_idsn(key: KeyLike, version: int = 1) -> int:
    """The initial data sequence number: the least significant 64 bits of the key's hash."""
    return int.from_bytes(key_digest(key, version)[-8:], "big")


def token_and_idsn(key: KeyLike, version: int = 1) -> tuple[int, int]:
    digest = key_digest(key, version)
    return int.from_bytes(digest[:4], "big"), int.from_bytes(digest[-8:], "big")


def mptcp_hmac(key: bytes, message: bytes, version: int = 1) -> bytes:
    """HMAC-SHA256 (v1) or HMAC-SHA1 (v0), the whole digest."""
    return _hmac.new(key, message, _hash(version)).digest()


def join_hmac(sender_key: KeyLike, receiver_key: KeyLike, sender_nonce: int,
              receiver_nonce: int, version: int = 1) -> bytes:
    """The MP_JOIN HMAC a host sends: Key = own key || peer's key, Msg = own nonce || peer's.

    The listener (B) sends its truncated form in the SYN-ACK, HMAC(Key-B||Key-A, R-B||R-A); the
    initiator (A) sends the 160-bit form in the third ACK, HMAC(Key-A||Key-B, R-A||R-B).
    """
    message = sender_nonce.to_bytes(4, "big") + receiver_nonce.to_bytes(4, "big")
    return mptcp_hmac(key_bytes(sender_key) + key_bytes(receiver_key), message, version)


def join_synack_hmac(sender_key: KeyLike, receiver_key: KeyLike, sender_nonce: int,
                     receiver_nonce: int, version: int = 1) -> int:
    """The SYN-ACK's truncated HMAC: the leftmost 64 bits, as an integer."""
    digest = join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce, version)
    return int.from_bytes(digest[:8], "big")


def join_ack_hmac(sender_key: KeyLike, receiver_key: KeyLike, sender_nonce: int,
                  receiver_nonce: int, version: int = 1) -> bytes:
    """The third ACK's HMAC: the leftmost 160 bits (all of SHA-1, the start of SHA-256)."""
    return join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce, version)[:20]


def add_addr_message(addr_id: int, addr: str, port: int | None = None) -> bytes:
    """The ADD_ADDR HMAC's message: Address ID || address || port (0 when there is none)."""
    packed = ipaddress.ip_address(addr).packed
    return bytes([addr_id]) + packed + (port or 0).to_bytes(2, "big")


def add_addr_hmac(sender_key: KeyLike, receiver_key: KeyLike, addr_id: int, addr: str,
                  port: int | None = None) -> int:
    """The ADD_ADDR (v1) truncated HMAC: the rightmost 64 bits of
    HMAC-SHA256(sender's key || receiver's key, Address ID || address || port)."""
    digest = mptcp_hmac(key_bytes(sender_key) + key_bytes(receiver_key),
                        add_addr_message(addr_id, addr, port), 1)
    return int.from_bytes(digest[-8:], "big")


def _ones_sum(data: bytes) -> int:
    """Ones'-complement sum of 16-bit big-endian words, end-around carry folded (0..0xffff).

    A number's value modulo 0xffff equals the folded sum of its 16-bit digits, which lets
    Python's big integers do the loop in C.
    """
    if len(data) % 2:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    folded = value % 0xFFFF
    return 0xFFFF if folded == 0 and value else folded


def internet_checksum(data: bytes) -> int:
    """The TCP/IP checksum of ``data`` (RFC 1071): the complement of its ones'-complement sum."""
    return ~_ones_sum(data) & 0xFFFF


def _dss_pseudo_header(dsn: int, ssn: int, data_level_len: int, checksum: int = 0) -> bytes:
    return (dsn.to_bytes(8, "big") + (ssn & 0xFFFFFFFF).to_bytes(4, "big")
            + data_level_len.to_bytes(2, "big") + checksum.to_bytes(2, "big"))


def dss_checksum(dsn: int, ssn: int, data_level_len: int, payload: bytes) -> int:
    """The DSS checksum of a mapping: the TCP-style checksum of the pseudo-header
    (64-bit DSN, relative subflow sequence number, data-level length, zeros) and the data."""
    return internet_checksum(_dss_pseudo_header(dsn, ssn, data_level_len) + payload)


def dss_checksum_ok(dsn: int, ssn: int, data_level_len: int, payload: bytes,
                    checksum: int) -> bool:
    """Does ``checksum`` verify? (Pseudo-header with the checksum in place sums to 0xffff.)"""
    return _ones_sum(_dss_pseudo_header(dsn, ssn, data_level_len, checksum) + payload) == 0xFFFF


def expand_dsn(dsn32: int, reference: int) -> int:
    """The 64-bit DSN nearest ``reference`` (e.g. the IDSN) whose low 32 bits are ``dsn32``.

    A DSS with a 4-byte DSN carries only the low bits; the checksum's pseudo-header needs all 64.
    """
    base = (reference & ~0xFFFFFFFF) | (dsn32 & 0xFFFFFFFF)
    candidates = (base - (1 << 32), base, base + (1 << 32))
    best = min(candidates, key=lambda c: abs(c - reference))
    return best & 0xFFFFFFFFFFFFFFFF
