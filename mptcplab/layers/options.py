"""Scapy layers for the MPTCP option (TCP option kind 30), RFC 8684 (v1) and RFC 6824 (v0).

One class per subtype. ``MPTCPOption(raw)`` picks the class from the subtype nibble and checks the
option's shape (length against subtype and flags) first: a shape that no RFC variant has becomes an
``MPMalformed`` holding the raw bytes and the reason, so dissection never raises.

Which variant a layer is (MP_CAPABLE SYN or ACK, DSS with or without a DSN, ...) follows its
``length`` when that is set (always after dissection); when building with ``length`` left unset,
it follows the fields that were given (``MPCapable(sender_key=k)`` is the 12-byte form) and the
length is computed.

``as_dict()`` on every layer gives the option's fields under the names the lab uses everywhere
(JSON output, the fast decoder's cross-check).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, ClassVar

from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    Field,
    FieldListField,
    FlagsField,
    StrField,
    StrLenField,
    XStrFixedLenField,
)
from scapy.packet import Packet

from mptcplab import wire
from mptcplab.describe import JOIN_STAGES, capable_stage, describe
from mptcplab.wire import (
    CAPABLE_FLAGS,
    DSS_FLAGS,
    MPTCP_KIND,
    SUBTYPE_NAMES,
    TCPRST_FLAGS,
    TCPRST_REASONS,
    dss_length,
    flag_letters,
)

# ---------------------------------------------------------------------------------------------
# Fields


class _UIntField(Field[int, int]):
    """An unsigned big-endian integer whose width (bytes) depends on the packet (4/8-byte DSNs)."""

    __slots__ = ["_width"]

    def __init__(self, name: str, default: int | None, width: Callable[[Packet], int]) -> None:
        super().__init__(name, default)
        self._width = width

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, int]:
        width = self._width(pkt)
        return s[width:], int.from_bytes(s[:width], "big")

    def i2len(self, pkt: Packet, x: Any) -> int:
        return self._width(pkt)

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        # The width may follow fields not set yet (a DSN's 4 or 8 bytes): check the widest,
        # and at build time the real one.
        return _fits(self.name, super().any2i(pkt, x), 64)

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:  
        width = self._width(pkt)
        _fits(self.name, int(val or 0), 8 * width)
        return s + int(val or 0).to_bytes(width, "big")


class _HexUIntField(_UIntField):
    def i2repr(self, pkt: Packet, x: int | None) -> str:
        return "None" if x is None else hex(x)


class _KeyField(_HexUIntField):
    """A 64-bit key (or DSN) field shown in hex."""

    def __init__(self, name: str, default: int | None = 0) -> None:
        super().__init__(name, default, lambda pkt: 8)


class _AddrField(Field[str, bytes]):
    """An IPv4 or IPv6 address; which one follows the packet (its length, or the value given)."""

    __slots__ = ["_is_v6"]

    def __init__(self, name: str, default: str, is_v6: Callable[[Packet], bool]) -> None:
        super().__init__(name, default)
        self._is_v6 = is_v6

    def addfield(self, pkt: Packet, s: bytes, val: str | None) -> bytes:
        family = socket.AF_INET6 if self._is_v6(pkt) else socket.AF_INET
        return s + socket.inet_pton(family, str(val or ("::" if family == socket.AF_INET6
                                                          else "0.0.0.0")))

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, str]:
        if self._is_v6(pkt):
            return s[16:], socket.inet_ntop(socket.AF_INET6, s[:16])
        return s[4:], socket.inet_ntop(socket.AF_INET, s[:4])

    def i2repr(self, pkt: Packet, x: str | None) -> str:
        return str(x)


class _AutoFlagsField(FlagsField):
    """Flags that, left unset (None), are derived from the fields the user gave."""

    __slots__ = ["_auto"]

    def __init__(self, name: str, size: int, names: str,
                 auto: Callable[[Packet], int]) -> None:
        super().__init__(name, None, size, names)
        self._auto = auto

    def i2m(self, pkt: Packet, x: Any) -> int:
        if x is None:
            return self._auto(pkt)
        return super().i2m(pkt, x)


def _fits(field: str, value: Any, bits: int) -> Any:
    """A value given for an integer field must fit it: MPCapable(version=20) is an error, not
    version 4 (the low bits) on the wire."""
    if value is None or not isinstance(value, int) or isinstance(value, bool):
        return value
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field}={value} does not fit in {bits} bits "
                         f"(0-{(1 << bits) - 1})")
    return value


class _Bits(BitField):
    """A BitField that refuses values it cannot hold."""

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        size = getattr(self, "size", None)       # not yet set while Field.__init__ runs
        return super().any2i(pkt, x) if size is None else \
            _fits(self.name, super().any2i(pkt, x), abs(size))


class _Byte(ByteField):
    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        return _fits(self.name, super().any2i(pkt, x), 8)


class _ByteEnum(ByteEnumField):
    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        return _fits(self.name, super().any2i(pkt, x), 8)


class _Flags(FlagsField):
    """Flags by their RFC letters; an unknown letter is an error that names the known ones."""

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        if isinstance(x, str) and hasattr(self, "names"):
            unknown = sorted({c for c in x if c not in self.names})
            if unknown:
                known = "".join(n for n in reversed(self.names) if n)   # as the RFC draws
                raise ValueError(f"{self.name}={x!r}: no flag {''.join(unknown)!r} "
                                 f"(flags are {known!r})")
        elif isinstance(x, int) and not isinstance(x, bool) and hasattr(self, "size"):
            _fits(self.name, x, self.size)
        return super().any2i(pkt, x)


class _CheckedAutoFlags(_AutoFlagsField, _Flags):
    pass


# ---------------------------------------------------------------------------------------------
# The base class and the dispatch


class MPTCPOption(Packet):
    """Any MPTCP option: ``MPTCPOption(raw)`` returns the layer of the right subtype.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-----------------------+
        |     Kind      |    Length     |Subtype|                       |
        +---------------+---------------+-------+                       |
        |                     Subtype-specific data                     |
        |                       (variable length)                       |
        +---------------------------------------------------------------+
    """

    name = "MPTCP option"
    subtype_id: ClassVar[int | None] = None
    registry: ClassVar[dict[int, type[MPTCPOption]]] = {}
    fields_desc = [
        _Byte("kind", MPTCP_KIND),
        _Byte("length", None),
        _Bits("subtype", 0, 4),
        _Bits("rest", 0, 4),
        StrLenField("data", b"", length_from=lambda pkt: max(0, (pkt.length or 3) - 3)),
    ]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sub = cls.__dict__.get("subtype_id")
        if sub is not None:
            MPTCPOption.registry[sub] = cls
        # Scapy only consults a dispatch_hook found in the class's own __dict__: give each
        # subclass the shape check, so MPJoin(raw) of misshapen bytes is MPMalformed too.
        if "dispatch_hook" not in cls.__dict__:
            cls.dispatch_hook = MPTCPOption.__dict__["dispatch_hook"]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if not _pkt:
            return cls
        return classify(bytes(_pkt), cls)

    # -- helpers shared by the subclasses ------------------------------------------------------

    variant: ClassVar[str | None] = None   # the format's name in mptcplab.wire.SHAPES

    def auto_length(self) -> int:
        """The length the given fields call for (used when ``length`` is unset)."""
        return len(self.self_build())

    def effective_length(self) -> int:
        return self.length if self.length is not None else self.auto_length()

    def given(self, name: str) -> bool:
        """Was this field set explicitly (or dissected)?"""
        return name in self.fields

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:1] + bytes([len(p) & 0xFF]) + p[2:]
        return p + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    @property
    def subtype_name(self) -> str:
        return SUBTYPE_NAMES.get(self.subtype, "UNKNOWN")

    def as_dict(self) -> dict[str, Any]:
        """The option's fields under the lab's names (shared with the fast decoder)."""
        return {"subtype": self.subtype_name, "length": self.effective_length()}

    def mysummary(self) -> str:
        return describe(self.as_dict())


def _class_for(raw: bytes) -> type[MPTCPOption]:
    """The class the subtype nibble names (RFC 6824's ADD_ADDR by its IPVer nibble)."""
    if wire.variant(raw) == "ADD_ADDR_V0":
        return MPAddAddrV0
    return MPTCPOption.registry.get(raw[2] >> 4, MPUnknown)


def classify(raw: bytes, wanted: type[Packet] = MPTCPOption) -> type[Packet]:
    """The layer class for the option bytes ``raw``: by subtype, or MPMalformed if misshapen."""
    if malformed_reason(raw, wanted) is not None:
        return MPMalformed
    if wanted is not MPTCPOption and issubclass(wanted, MPTCPOption):
        return wanted
    return _class_for(raw)


def malformed_reason(raw: bytes, wanted: type[Packet] = MPTCPOption) -> str | None:
    """Why these bytes are not a well-formed MPTCP option (as ``wanted``, if a subtype class
    is given), or None when they are: ``mptcplab.wire.malformed_reason``."""
    expected = getattr(wanted, "variant", None) if wanted is not MPTCPOption else None
    return wire.malformed_reason(raw, expected)


def _header(subtype: int) -> list[Field[Any, Any]]:
    return [_Byte("kind", MPTCP_KIND), _Byte("length", None),
            _Bits("subtype", subtype, 4)]


# ---------------------------------------------------------------------------------------------
# MP_CAPABLE


def _capable_len(pkt: MPCapable) -> int:
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length")
    for name, length in (("checksum", 24), ("data_level_len", 22), ("receiver_key", 20),
                         ("sender_key", 12)):
        if pkt.given(name):
            return length
    return 4


class MPCapable(MPTCPOption):
    """MP_CAPABLE (subtype 0x0): RFC 8684 section 3.1, RFC 6824 section 3.1 for version 0.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-------+---------------+
        |     Kind      |    Length     |Subtype|Version|A|B|C|D|E|F|G|H|
        +---------------+---------------+-------+-------+---------------+
        |                   Option Sender's Key (64 bits)               |
        |                      (if option Length > 4)                   |
        |                                                               |
        +---------------------------------------------------------------+
        |                  Option Receiver's Key (64 bits)              |
        |                      (if option Length > 12)                  |
        |                                                               |
        +-------------------------------+-------------------------------+
        |  Data-Level Length (16 bits)  |  Checksum (16 bits, optional) |
        +-------------------------------+-------------------------------+

    Lengths: v1 4 (SYN), 12 (SYN-ACK), 20 (third ACK), 22 (first data: + data-level length),
    24 (+ DSS checksum); v0 12 (SYN and SYN-ACK) and 20 (third ACK).
    Flags: A checksum required, B extensibility, C do not send to the source address,
    H HMAC-SHA256 (v1) / HMAC-SHA1 (v0).
    """

    name = "MP_CAPABLE"
    variant = "MP_CAPABLE"
    subtype_id = 0x0
    fields_desc = _header(0x0) + [
        _Bits("version", 1, 4),
        _Flags("flags", 0x01, 8, CAPABLE_FLAGS),
        ConditionalField(_KeyField("sender_key"), lambda p: _capable_len(p) >= 12),
        ConditionalField(_KeyField("receiver_key"), lambda p: _capable_len(p) >= 20),
        ConditionalField(_UIntField("data_level_len", 0, lambda p: 2),
                         lambda p: _capable_len(p) >= 22),
        ConditionalField(_HexUIntField("checksum", 0, lambda p: 2),
                         lambda p: _capable_len(p) >= 24),
    ]


    def auto_length(self) -> int:
        return _capable_len(self)

    @property
    def stage(self) -> str:
        """Which handshake step this length belongs to."""
        return capable_stage(self.effective_length(), self.version)

    def as_dict(self) -> dict[str, Any]:
        length = self.effective_length()
        out: dict[str, Any] = {"subtype": "MP_CAPABLE", "length": length,
                               "version": self.version,
                               "flags": flag_letters(int(self.flags), CAPABLE_FLAGS)}
        if length >= 12:
            out["sender_key"] = self.sender_key
        if length >= 20:
            out["receiver_key"] = self.receiver_key
        if length >= 22:
            out["data_level_len"] = self.data_level_len
        if length >= 24:
            out["checksum"] = self.checksum
        return out


# ---------------------------------------------------------------------------------------------
# MP_JOIN


def _join_len(pkt: MPJoin) -> int:
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length")
    if pkt.given("hmac"):
        return 24
    if pkt.given("truncated_hmac"):
        return 16
    return 12


class MPJoin(MPTCPOption):
    """MP_JOIN (subtype 0x1): RFC 8684 section 3.2. Three forms, told apart by their length.

    SYN (length 12)::

        +---------------+---------------+-------+-----+-+---------------+
        |     Kind      |  Length = 12  |Subtype|(rsv)|B|   Address ID  |
        +---------------+---------------+-------+-----+-+---------------+
        |                   Receiver's Token (32 bits)                  |
        +---------------------------------------------------------------+
        |                Sender's Random Number (32 bits)               |
        +---------------------------------------------------------------+

    SYN-ACK (length 16)::

        +---------------+---------------+-------+-----+-+---------------+
        |     Kind      |  Length = 16  |Subtype|(rsv)|B|   Address ID  |
        +---------------+---------------+-------+-----+-+---------------+
        |                                                               |
        |                Sender's Truncated HMAC (64 bits)              |
        |                                                               |
        +---------------------------------------------------------------+
        |                Sender's Random Number (32 bits)               |
        +---------------------------------------------------------------+

    Third ACK (length 24)::

        +---------------+---------------+-------+-----------------------+
        |     Kind      |  Length = 24  |Subtype|      (reserved)       |
        +---------------+---------------+-------+-----------------------+
        |                                                               |
        |                   Sender's HMAC (160 bits)                    |
        |                                                               |
        +---------------------------------------------------------------+

    Fields: ``flags`` (B = backup), ``addr_id``, ``token``, ``nonce`` (the sender's random
    number), ``truncated_hmac`` (int), ``hmac`` (20 bytes).
    """

    name = "MP_JOIN"
    variant = "MP_JOIN"
    subtype_id = 0x1
    fields_desc = _header(0x1) + [
        ConditionalField(_Bits("reserved", 0, 3), lambda p: _join_len(p) != 24),
        ConditionalField(_Flags("flags", 0, 1, "B"), lambda p: _join_len(p) != 24),
        ConditionalField(_Byte("addr_id", 0), lambda p: _join_len(p) != 24),
        ConditionalField(_Bits("reserved_ack", 0, 12), lambda p: _join_len(p) == 24),
        ConditionalField(_HexUIntField("token", 0, lambda p: 4), lambda p: _join_len(p) == 12),
        ConditionalField(_KeyField("truncated_hmac"), lambda p: _join_len(p) == 16),
        ConditionalField(_HexUIntField("nonce", 0, lambda p: 4),
                         lambda p: _join_len(p) in (12, 16)),
        ConditionalField(XStrFixedLenField("hmac", b"\x00" * 20, 20), lambda p: _join_len(p) == 24),
    ]


    def auto_length(self) -> int:
        return _join_len(self)

    @property
    def stage(self) -> str:
        return JOIN_STAGES.get(self.effective_length(), "?")

    def as_dict(self) -> dict[str, Any]:
        length = self.effective_length()
        out: dict[str, Any] = {"subtype": "MP_JOIN", "length": length}
        if length != 24:
            out["backup"] = bool(int(self.flags) & 1)
            out["addr_id"] = self.addr_id
        if length == 12:
            out["token"] = self.token
        if length == 16:
            out["truncated_hmac"] = self.truncated_hmac
        if length in (12, 16):
            out["nonce"] = self.nonce
        if length == 24:
            out["hmac"] = bytes(self.hmac).hex()
        return out


# ---------------------------------------------------------------------------------------------
# DSS


def _dss_auto_flags(pkt: MPDSS) -> int:
    flags = 0
    if pkt.given("data_ack"):
        flags |= 0x01
        if (pkt.getfieldval("data_ack") or 0) > 0xFFFFFFFF:
            flags |= 0x02
    if pkt.given("dsn") or pkt.given("ssn") or pkt.given("data_level_len"):
        flags |= 0x04
        if (pkt.getfieldval("dsn") or 0) > 0xFFFFFFFF:
            flags |= 0x08
    return flags


def _dss_flags(pkt: MPDSS) -> int:
    flags = pkt.getfieldval("flags")
    return _dss_auto_flags(pkt) if flags is None else int(flags)


def _dss_has_checksum(pkt: MPDSS) -> bool:
    flags = _dss_flags(pkt)
    if not flags & 0x04:
        return False
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length") == dss_length(flags, with_checksum=True)
    return pkt.given("checksum")


class MPDSS(MPTCPOption):
    """DSS, Data Sequence Signal (subtype 0x2): RFC 8684 section 3.3.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+----------------------+
        |     Kind      |    Length     |Subtype| (reserved) |F|m|M|a|A|
        +---------------+---------------+-------+----------------------+
        |           Data ACK (4 or 8 octets, depending on flags)       |
        +--------------------------------------------------------------+
        |   Data Sequence Number (4 or 8 octets, depending on flags)   |
        +--------------------------------------------------------------+
        |              Subflow Sequence Number (4 octets)              |
        +-------------------------------+------------------------------+
        |  Data-Level Length (2 octets) |      Checksum (2 octets)     |
        +-------------------------------+------------------------------+

    Flags: A data ACK present, a it is 8 octets, M mapping (DSN, SSN, length, checksum)
    present, m the DSN is 8 octets, F DATA_FIN. The checksum is there only when the connection
    negotiated checksums. Left unset, ``flags`` follows the fields given (``MPDSS(data_ack=5)``
    is A).
    """

    name = "DSS"
    variant = "DSS"
    subtype_id = 0x2
    fields_desc = _header(0x2) + [
        _Bits("reserved", 0, 7),
        _CheckedAutoFlags("flags", 5, DSS_FLAGS, _dss_auto_flags),
        ConditionalField(_UIntField("data_ack", 0, lambda p: 8 if _dss_flags(p) & 0x02 else 4),
              lambda p: bool(_dss_flags(p) & 0x01)),
        ConditionalField(_UIntField("dsn", 0, lambda p: 8 if _dss_flags(p) & 0x08 else 4),
              lambda p: bool(_dss_flags(p) & 0x04)),
        ConditionalField(_UIntField("ssn", 0, lambda p: 4), lambda p: bool(_dss_flags(p) & 0x04)),
        ConditionalField(_UIntField("data_level_len", 0, lambda p: 2),
                         lambda p: bool(_dss_flags(p) & 0x04)),
        ConditionalField(_HexUIntField("checksum", 0, lambda p: 2), _dss_has_checksum),
    ]


    def auto_length(self) -> int:
        return dss_length(_dss_flags(self), _dss_has_checksum(self))

    @property
    def data_fin(self) -> bool:
        return bool(_dss_flags(self) & 0x10)

    def as_dict(self) -> dict[str, Any]:
        flags = _dss_flags(self)
        out: dict[str, Any] = {"subtype": "DSS", "length": self.effective_length(),
                               "flags": flag_letters(flags, DSS_FLAGS)}
        if flags & 0x01:
            out["data_ack"] = self.data_ack
            out["data_ack_len"] = 8 if flags & 0x02 else 4
        if flags & 0x04:
            out["dsn"] = self.dsn
            out["dsn_len"] = 8 if flags & 0x08 else 4
            out["ssn"] = self.ssn
            out["data_level_len"] = self.data_level_len
            if _dss_has_checksum(self):
                out["checksum"] = self.checksum
        out["data_fin"] = bool(flags & 0x10)
        return out


# ---------------------------------------------------------------------------------------------
# ADD_ADDR


def _addr_is_v6(pkt: Packet) -> bool:
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length") >= 20
    value = pkt.fields.get("addr")
    return value is not None and ":" in str(value)


def _add_addr_echo(pkt: Packet) -> bool:
    return bool(int(pkt.getfieldval("flags")) & 0x1)


def _add_addr_has_port(pkt: Packet) -> bool:
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length") in (10, 18, 22, 30)
    return pkt.given("port")


class MPAddAddr(MPTCPOption):
    """ADD_ADDR (subtype 0x3), RFC 8684 section 3.4.1 (version 1).

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-------+---------------+
        |     Kind      |     Length    |Subtype|(rsv)|E|  Address ID   |
        +---------------+---------------+-------+-------+---------------+
        |           Address (IPv4: 4 octets / IPv6: 16 octets)          |
        +-------------------------------+-------------------------------+
        |   Port (2 octets, optional)   |                               |
        +-------------------------------+                               |
        |                Truncated HMAC (8 octets, if E=0)              |
        |                               +-------------------------------+
        |                               |
        +-------------------------------+

    E = 1 marks the echo, which carries no HMAC. Lengths: 16/18 (IPv4, without/with port),
    28/30 (IPv6); the echo 8/10 and 20/22. The family follows ``addr`` when building.
    """

    name = "ADD_ADDR"
    variant = "ADD_ADDR"
    subtype_id = 0x3
    fields_desc = _header(0x3) + [
        _Bits("reserved", 0, 3),
        _Flags("flags", 0, 1, "E"),
        _Byte("addr_id", 0),
        _AddrField("addr", "0.0.0.0", _addr_is_v6),
        ConditionalField(_UIntField("port", 0, lambda p: 2), _add_addr_has_port),
        ConditionalField(_KeyField("hmac"), lambda p: not _add_addr_echo(p)),
    ]


    @property
    def echo(self) -> bool:
        return _add_addr_echo(self)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subtype": "ADD_ADDR", "length": self.effective_length(),
                               "version": 1, "echo": self.echo, "addr_id": self.addr_id,
                               "addr": str(self.addr),
                               "port": self.port if _add_addr_has_port(self) else None}
        out["hmac"] = None if self.echo else self.hmac
        return out


def _v0_ipver(pkt: Packet) -> int:
    if pkt.getfieldval("ipver") is not None:
        return int(pkt.getfieldval("ipver"))
    return 6 if _addr_is_v6(pkt) else 4


class _IPVerField(BitField):
    def i2m(self, pkt: Packet, x: Any) -> int:
        return _v0_ipver(pkt) if x is None else int(x)


class MPAddAddrV0(MPAddAddr):
    """ADD_ADDR of RFC 6824 (version 0): the low nibble is the IP version, there is no HMAC.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-------+---------------+
        |     Kind      |     Length    |Subtype| IPVer |  Address ID   |
        +---------------+---------------+-------+-------+---------------+
        |          Address (IPv4 - 4 octets / IPv6 - 16 octets)         |
        +-------------------------------+-------------------------------+
        |   Port (2 octets, optional)   |
        +-------------------------------+

    Lengths 8/10 (IPv4 without/with port) and 20/22 (IPv6).
    """

    name = "ADD_ADDR (v0)"
    variant = "ADD_ADDR_V0"
    subtype_id = None
    fields_desc = _header(0x3) + [
        _IPVerField("ipver", None, 4),
        _Byte("addr_id", 0),
        _AddrField("addr", "0.0.0.0", _addr_is_v6),
        ConditionalField(_UIntField("port", 0, lambda p: 2), _add_addr_has_port),
    ]


    @property
    def echo(self) -> bool:
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "ADD_ADDR", "length": self.effective_length(), "version": 0,
                "ipver": _v0_ipver(self), "echo": False, "addr_id": self.addr_id,
                "addr": str(self.addr),
                "port": self.port if _add_addr_has_port(self) else None, "hmac": None}


# ---------------------------------------------------------------------------------------------
# REMOVE_ADDR, MP_PRIO, MP_FAIL, MP_FASTCLOSE, MP_TCPRST, MP_EXPERIMENTAL


class MPRemoveAddr(MPTCPOption):
    """REMOVE_ADDR (subtype 0x4): RFC 8684 section 3.4.2. One address ID per octet.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-------+---------------+
        |     Kind      |  Length = 3+n |Subtype|(resvd)|   Address ID  | ...
        +---------------+---------------+-------+-------+---------------+
                                   (followed by n-1 Address IDs, if required)
    """

    name = "REMOVE_ADDR"
    variant = "REMOVE_ADDR"
    subtype_id = 0x4
    fields_desc = _header(0x4) + [
        _Bits("reserved", 0, 4),
        FieldListField("addr_ids", [], _Byte("", 0),
                       length_from=lambda p: (p.length or 3) - 3),
    ]


    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "REMOVE_ADDR", "length": self.effective_length(),
                "addr_ids": list(self.addr_ids)}


def _prio_has_id(pkt: Packet) -> bool:
    if pkt.getfieldval("length") is not None:
        return pkt.getfieldval("length") == 4
    return pkt.given("addr_id")


class MPPrio(MPTCPOption):
    """MP_PRIO (subtype 0x5): RFC 8684 section 3.3.8 (length 3; RFC 6824 also had length 4
    with an address ID).

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-----+-+--------------+
        |     Kind      |     Length    |Subtype|(rsv)|B| AddrID (opt) |
        +---------------+---------------+-------+-----+-+--------------+
    """

    name = "MP_PRIO"
    variant = "MP_PRIO"
    subtype_id = 0x5
    fields_desc = _header(0x5) + [
        _Bits("reserved", 0, 3),
        _Flags("flags", 0, 1, "B"),
        ConditionalField(_Byte("addr_id", 0), _prio_has_id),
    ]


    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "MP_PRIO", "length": self.effective_length(),
                "backup": bool(int(self.flags) & 1),
                "addr_id": self.addr_id if _prio_has_id(self) else None}


class MPFail(MPTCPOption):
    """MP_FAIL (subtype 0x6): RFC 8684 section 3.7.

    ::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+----------------------+
        |     Kind      |   Length=12   |Subtype|      (reserved)      |
        +---------------+---------------+-------+----------------------+
        |                                                              |
        |                 Data Sequence Number (8 octets)              |
        |                                                              |
        +--------------------------------------------------------------+
    """

    name = "MP_FAIL"
    variant = "MP_FAIL"
    subtype_id = 0x6
    fields_desc = _header(0x6) + [_Bits("reserved", 0, 12), _KeyField("dsn")]


    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "MP_FAIL", "length": self.effective_length(), "dsn": self.dsn}


class MPFastclose(MPTCPOption):
    """MP_FASTCLOSE (subtype 0x7): RFC 8684 section 3.5.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-----------------------+
        |     Kind      |    Length     |Subtype|      (reserved)       |
        +---------------+---------------+-------+-----------------------+
        |                      Option Receiver's Key                    |
        |                            (64 bits)                          |
        |                                                               |
        +---------------------------------------------------------------+
    """

    name = "MP_FASTCLOSE"
    variant = "MP_FASTCLOSE"
    subtype_id = 0x7
    fields_desc = _header(0x7) + [_Bits("reserved", 0, 12), _KeyField("receiver_key")]


    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "MP_FASTCLOSE", "length": self.effective_length(),
                "receiver_key": self.receiver_key}


class MPTcpRst(MPTCPOption):
    """MP_TCPRST (subtype 0x8): RFC 8684 section 3.6.

    ::

                             1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +---------------+---------------+-------+-----------------------+
        |     Kind      |    Length     |Subtype|U|V|W|T|    Reason     |
        +---------------+---------------+-------+-----------------------+

    T: the error is transient (the subflow may be tried again); U, V, W are unassigned.
    """

    name = "MP_TCPRST"
    variant = "MP_TCPRST"
    subtype_id = 0x8
    fields_desc = _header(0x8) + [
        _Flags("flags", 0, 4, TCPRST_FLAGS),
        _ByteEnum("reason", 0, TCPRST_REASONS),
    ]


    @property
    def reason_name(self) -> str:
        return TCPRST_REASONS.get(self.reason, f"unknown reason {self.reason:#04x}")

    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "MP_TCPRST", "length": self.effective_length(),
                "flags": flag_letters(int(self.flags), TCPRST_FLAGS), "reason": self.reason,
                "reason_name": self.reason_name}


class MPExperimental(MPTCPOption):
    """MP_EXPERIMENTAL (subtype 0xf): RFC 8684 section 7, reserved for private use.

    ::

        +---------------+---------------+-------+-------+---------------+
        |     Kind      |    Length     |Subtype| (any) |  data ...     |
        +---------------+---------------+-------+-------+---------------+
    """

    name = "MP_EXPERIMENTAL"
    variant = "MP_EXPERIMENTAL"
    subtype_id = 0xF
    fields_desc = _header(0xF) + [
        _Bits("nibble", 0, 4),
        StrLenField("data", b"", length_from=lambda p: (p.length or 3) - 3),
    ]

    def as_dict(self) -> dict[str, Any]:
        return {"subtype": "MP_EXPERIMENTAL", "length": self.effective_length(),
                "nibble": self.nibble, "data": bytes(self.data).hex()}


class MPUnknown(MPTCPOption):
    """An MPTCP option of a subtype no RFC assigns (9..14): kept as it came, byte for byte."""

    name = "MPTCP unknown subtype"
    variant = "UNKNOWN"
    fields_desc = _header(0x9) + [
        _Bits("nibble", 0, 4),
        StrLenField("data", b"", length_from=lambda p: (p.length or 3) - 3),
    ]

    def as_dict(self) -> dict[str, Any]:
        length = self.effective_length()
        return {"subtype": "UNKNOWN", "length": length, "subtype_id": self.subtype,
                "raw": bytes(self)[:length].hex()}


class MPMalformed(MPTCPOption):
    """Bytes that claimed to be an MPTCP option but have no valid shape. Kept as they came."""

    name = "MPTCP malformed option"
    fields_desc = [StrField("raw", b"")]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        return cls

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        return p + pay

    def effective_length(self) -> int:
        raw = bytes(self.raw)
        return raw[1] if len(raw) > 1 else len(raw)

    @property
    def reason(self) -> str:
        return malformed_reason(bytes(self.raw)) or "well-formed"

    @property
    def subtype_name(self) -> str:
        raw = bytes(self.raw)
        return SUBTYPE_NAMES.get(raw[2] >> 4, "UNKNOWN") if len(raw) >= 3 else "UNKNOWN"

    def as_dict(self) -> dict[str, Any]:
        raw = bytes(self.raw)
        return {"subtype": self.subtype_name, "length": self.effective_length(),
                "malformed": True, "raw": raw.hex(), "reason": self.reason}


