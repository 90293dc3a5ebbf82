"""Crafting helpers: MPTCP option layers with their tokens, HMACs and checksums filled in.

The arguments are what a host knows: its own key and nonce, the peer's key and nonce. Each
``*_ok`` function checks a received layer the same way, for the analyser and the cases.
"""

from __future__ import annotations

from mptcplab import crypto
from mptcplab.layers.options import MPAddAddr, MPCapable, MPDSS, MPJoin


def capable(version: int = 1, *, sender_key: int | None = None,
            receiver_key: int | None = None, checksum: bool = False,
            data: bytes | None = None) -> MPCapable:
    """The MP_CAPABLE a handshake step needs: SYN (no key; v0: own key), SYN-ACK (own key),
    third ACK (both keys), or the v1 first data packet (``data`` given: + data-level length,
    + checksum when ``checksum``). ``checksum`` also sets the A flag."""
    fields: dict[str, object] = {"version": version, "flags": 0x81 if checksum else 0x01}
    if sender_key is not None:
        fields["sender_key"] = sender_key
    if receiver_key is not None:
        fields["receiver_key"] = receiver_key
    if data is not None:
        if sender_key is None or receiver_key is None:
            raise ValueError("MP_CAPABLE with data carries both keys")
        fields["data_level_len"] = len(data)
        if checksum:
            idsn = crypto.key_idsn(sender_key, version)
            fields["checksum"] = crypto.dss_checksum((idsn + 1) & (2**64 - 1), 1, len(data), data)
    return MPCapable(**fields)


def join_syn(*, peer_key: int, nonce: int, addr_id: int = 0, backup: bool = False,
             version: int = 1) -> MPJoin:
    """MP_JOIN for a SYN: the peer's token (from its key) and our nonce."""
    return MPJoin(flags=int(backup), addr_id=addr_id, token=crypto.key_token(peer_key, version),
                  nonce=nonce)


def join_synack(*, own_key: int, peer_key: int, own_nonce: int, peer_nonce: int,
                addr_id: int = 0, backup: bool = False, version: int = 1) -> MPJoin:
    """MP_JOIN for a SYN-ACK: the truncated HMAC over our key first and our nonce first."""
    return MPJoin(flags=int(backup), addr_id=addr_id, nonce=own_nonce,
                  truncated_hmac=crypto.join_synack_hmac(own_key, peer_key, own_nonce,
                                                         peer_nonce, version))


def join_ack(*, own_key: int, peer_key: int, own_nonce: int, peer_nonce: int,
             version: int = 1) -> MPJoin:
    """MP_JOIN for the third ACK: the 160-bit HMAC."""
    return MPJoin(hmac=crypto.join_ack_hmac(own_key, peer_key, own_nonce, peer_nonce, version))


def join_ok(option: MPJoin, *, sender_key: int, receiver_key: int, sender_nonce: int,
            receiver_nonce: int, version: int = 1) -> bool:
    """Does a received MP_JOIN SYN-ACK or ACK carry the HMAC its sender should have sent?"""
    digest = crypto.join_hmac(sender_key, receiver_key, sender_nonce, receiver_nonce, version)
    length = option.effective_length()
    if length == 16:
        return option.truncated_hmac == int.from_bytes(digest[:8], "big")
    if length == 24:
        return bytes(option.hmac) == digest[:20]
    raise ValueError("only the SYN-ACK (16) and ACK (24) forms of MP_JOIN carry an HMAC")


def add_addr(*, sender_key: int, receiver_key: int, addr_id: int, addr: str,
             port: int | None = None) -> MPAddAddr:
    """A v1 ADD_ADDR announcement with its HMAC."""
    fields: dict[str, object] = {"addr_id": addr_id, "addr": addr,
                                 "hmac": crypto.add_addr_hmac(sender_key, receiver_key, addr_id,
                                                              addr, port)}
    if port is not None:
        fields["port"] = port
    return MPAddAddr(**fields)


def add_addr_echo(announcement: MPAddAddr) -> MPAddAddr:
    """The echo of a v1 ADD_ADDR: same id, address and port, E set, no HMAC."""
    fields: dict[str, object] = {"flags": "E", "addr_id": announcement.addr_id,
                                 "addr": announcement.addr}
    port = announcement.as_dict()["port"]
    if port is not None:
        fields["port"] = port
    return MPAddAddr(**fields)


def add_addr_ok(option: MPAddAddr, *, sender_key: int, receiver_key: int) -> bool:
    """Does a received v1 ADD_ADDR carry the HMAC RFC 8684 asks for?"""
    d = option.as_dict()
    if d["echo"] or d.get("version") == 0:
        raise ValueError("only a v1 ADD_ADDR announcement carries an HMAC")
    return d["hmac"] == crypto.add_addr_hmac(sender_key, receiver_key, d["addr_id"], d["addr"],
                                             d["port"])


def with_dss_checksum(option: MPDSS, payload: bytes, *, dsn64: int | None = None) -> MPDSS:
    """A copy of a DSS mapping with its checksum computed over ``payload``.

    ``dsn64`` gives the full DSN when the option carries only 32 bits of it.
    """
    if not int(option.as_dict().get("dsn_len", 0)):
        raise ValueError("a DSS without a mapping has no checksum")
    out = option.copy()
    out.checksum = crypto.dss_checksum(dsn64 if dsn64 is not None else option.dsn, option.ssn,
                                       option.data_level_len, payload)
    if out.length is not None:
        out.length = None
    return out


def dss_checksum_ok(option: MPDSS, payload: bytes, *, dsn64: int | None = None) -> bool:
    """Does a received DSS mapping's checksum verify over ``payload``?"""
    d = option.as_dict()
    if "checksum" not in d:
        raise ValueError("this DSS carries no checksum")
    return crypto.dss_checksum_ok(dsn64 if dsn64 is not None else d["dsn"], d["ssn"],
                                  d["data_level_len"], payload, d["checksum"])
