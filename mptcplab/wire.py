"""The MPTCP option's wire format, without Scapy: subtypes, flags, lengths, the shape check.

RFC 8684 (v1) and RFC 6824 (v0) give every subtype a small set of valid lengths; an option of
any other shape is malformed. This is the one place that knows them: the Scapy layers dispatch
on it and the fast decoder validates with it, so the two cannot disagree on what is malformed.
Importing it costs nothing (the sniffer starts without loading Scapy).
"""

from __future__ import annotations

from collections.abc import Callable

MPTCP_KIND = 30

SUBTYPE_NAMES: dict[int, str] = {
    0x0: "MP_CAPABLE",
    0x1: "MP_JOIN",
    0x2: "DSS",
    0x3: "ADD_ADDR",
    0x4: "REMOVE_ADDR",
    0x5: "MP_PRIO",
    0x6: "MP_FAIL",
    0x7: "MP_FASTCLOSE",
    0x8: "MP_TCPRST",
    0xF: "MP_EXPERIMENTAL",
}

# RFC 8684 section 3.6, the MP_TCPRST reason codes.
TCPRST_REASONS: dict[int, str] = {
    0x00: "Unspecified error",
    0x01: "MPTCP-specific error",
    0x02: "Lack of resources",
    0x03: "Administratively prohibited",
    0x04: "Too much outstanding data",
    0x05: "Unacceptable performance",
    0x06: "Middlebox interference",
}

# Flag letters, least significant bit first (Scapy's FlagsField order). Strings, not lists:
# Scapy then accepts flags="AH" as well as the integer.
CAPABLE_FLAGS = "HGFEDCBA"
DSS_FLAGS = "AaMmF"
TCPRST_FLAGS = "TWVU"

# The lengths each variant may have, from the RFC figures.
CAPABLE_LENGTHS = (4, 12, 20, 22, 24)
CAPABLE_V0_LENGTHS = (12, 20)                                     # RFC 6824
JOIN_LENGTHS = (12, 16, 24)
ADD_ADDR_V1_LENGTHS = {0: (16, 18, 28, 30), 1: (8, 10, 20, 22)}   # by the E flag
ADD_ADDR_V0_LENGTHS = {4: (8, 10), 6: (20, 22)}                   # by IPVer


def flag_letters(value: int, names: str) -> str:
    """Set flags as letters, most significant first ("AH"), as the RFC figures order them.

    ``names`` lists the letters least significant bit first.
    """
    return "".join(name for bit, name in reversed(list(enumerate(names))) if value >> bit & 1)


def dss_length(flags: int, with_checksum: bool = False) -> int:
    """Length of a DSS option with these flags (bit 0 A, 1 a, 2 M, 3 m, 4 F)."""
    length = 4
    if flags & 0x01:
        length += 8 if flags & 0x02 else 4
    if flags & 0x04:
        length += (8 if flags & 0x08 else 4) + 4 + 2 + (2 if with_checksum else 0)
    return length


def option_spans(x: bytes) -> list[bytes]:
    """The bytes of each option in a TCP options area, walked the way Scapy walks them (EOL
    ends the walk, NOP is one byte, a length under 2 counts as 2)."""
    spans: list[bytes] = []
    while x:
        kind = x[0]
        if kind == 0:
            spans.append(x[:1])
            break
        if kind == 1:
            spans.append(x[:1])
            x = x[1:]
            continue
        olen = x[1] if len(x) > 1 else 0
        step = max(olen, 2)
        spans.append(x[:step])
        x = x[step:]
    return spans


# -- the shape of each variant: why ``raw`` (exactly the declared length) cannot be it ---------

def _capable(raw: bytes) -> str | None:
    version = raw[2] & 0x0F
    allowed = CAPABLE_V0_LENGTHS if version == 0 else CAPABLE_LENGTHS
    if len(raw) not in allowed:
        return f"length {len(raw)} is none of {', '.join(map(str, allowed))} for version {version}"
    return None


def _join(raw: bytes) -> str | None:
    if len(raw) not in JOIN_LENGTHS:
        return f"length {len(raw)} is none of 12 (SYN), 16 (SYN-ACK), 24 (ACK)"
    return None


def _dss(raw: bytes) -> str | None:
    if len(raw) < 4:
        return f"length {len(raw)} leaves no room for the flags"
    flags = raw[3] & 0x1F
    allowed = {dss_length(flags), dss_length(flags, True)} if flags & 0x04 \
        else {dss_length(flags)}
    if len(raw) not in allowed:
        want = " or ".join(map(str, sorted(allowed)))
        named = flag_letters(flags, DSS_FLAGS) or "none"
        return f"length {len(raw)} does not match flags {named} ({want})"
    return None


def _add_addr(raw: bytes) -> str | None:
    echo = raw[2] & 0x1
    allowed = ADD_ADDR_V1_LENGTHS[echo]
    if len(raw) not in allowed:
        kind = "echo" if echo else "announcement"
        return f"length {len(raw)} is none of {', '.join(map(str, allowed))} for an {kind}"
    return None


def _add_addr_v0(raw: bytes) -> str | None:
    ipver = raw[2] & 0x0F
    if len(raw) not in ADD_ADDR_V0_LENGTHS.get(ipver, ()):
        return f"length {len(raw)} does not fit IPVer {ipver}"
    return None


def _exactly(length: int) -> Callable[[bytes], str | None]:
    return lambda raw: None if len(raw) == length else f"length {len(raw)} is not {length}"


SHAPES: dict[str, Callable[[bytes], str | None]] = {
    "MP_CAPABLE": _capable,
    "MP_JOIN": _join,
    "DSS": _dss,
    "ADD_ADDR": _add_addr,
    "ADD_ADDR_V0": _add_addr_v0,
    "REMOVE_ADDR": lambda raw: "no address ID" if len(raw) < 4 else None,
    "MP_PRIO": lambda raw: None if len(raw) in (3, 4) else f"length {len(raw)} is neither 3 nor 4",
    "MP_FAIL": _exactly(12),
    "MP_FASTCLOSE": _exactly(12),
    "MP_TCPRST": _exactly(4),
}


def variant(raw: bytes) -> str:
    """The format ``raw`` claims by its subtype nibble: a subtype name, ``ADD_ADDR_V0`` for
    RFC 6824's ADD_ADDR (IPVer 4 or 6 in the low nibble, as tcpdump reads it), or UNKNOWN."""
    sub = raw[2] >> 4
    if sub == 0x3 and (raw[2] & 0x0F) in ADD_ADDR_V0_LENGTHS:
        return "ADD_ADDR_V0"
    return SUBTYPE_NAMES.get(sub, "UNKNOWN")


def _subtype(variant_name: str) -> str:
    return "ADD_ADDR" if variant_name == "ADD_ADDR_V0" else variant_name


def malformed_reason(raw: bytes, expected: str | None = None) -> str | None:
    """Why these option bytes are not a well-formed MPTCP option, or None when they are.

    ``expected`` (a variant name) checks them against that variant rather than the one their
    subtype nibble names.
    """
    if len(raw) < 3:
        return f"{len(raw)}-byte option is too short for kind, length and subtype"
    if raw[0] != MPTCP_KIND:
        return f"kind {raw[0]} is not MPTCP ({MPTCP_KIND})"
    declared = raw[1]
    if declared < 3:
        return f"length {declared} is too short for an MPTCP option"
    if declared > len(raw):
        return f"length {declared} but only {len(raw)} bytes present"
    raw = raw[:declared]
    claimed = variant(raw)
    if expected is not None and _subtype(expected) != _subtype(claimed):
        return f"subtype {raw[2] >> 4} is not {_subtype(expected)}"
    check = SHAPES.get(expected or claimed)
    reason = check(raw) if check is not None else None
    if reason is not None:
        return f"{SUBTYPE_NAMES.get(raw[2] >> 4, 'UNKNOWN')}: {reason}"
    return None
