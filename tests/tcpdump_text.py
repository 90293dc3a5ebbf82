"""Read tcpdump's text decodes (the ``.out`` files of its test suite) of MPTCP options.

tcpdump is the oracle here, so this parser knows only tcpdump's printer (``print-mptcp.c``) and
nothing of ours: it turns ``mptcp 20 dss ack 3386645601 seq 2976985014 subseq 1 len 1 csum
0x9e91`` into the fields that text proves, under the names ``as_dict()`` uses. A field the text
proves absent (a DSS without ``csum``) is ``ABSENT``; a field tcpdump does not show is left out,
with the reason next to the code that leaves it out. Text it does not recognise raises
``ValueError``: an option is never skipped quietly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()
"""The value expected for a field the text proves is not in the option."""

SUBTYPES = {
    "capable": "MP_CAPABLE", "join": "MP_JOIN", "dss": "DSS", "add-addr": "ADD_ADDR",
    "rem-addr": "REMOVE_ADDR", "prio": "MP_PRIO", "fail": "MP_FAIL",
    "fast-close": "MP_FASTCLOSE", "tcprst": "MP_TCPRST",
    # tcpdump names every subtype above 8 "unknown", the experimental 0xf included.
    "unknown": frozenset({"UNKNOWN", "MP_EXPERIMENTAL"}),
}

# tcpdump's mp_tcprst_reasons table; it prints "unknown (0x%02x)" for any other code.
TCPRST_REASONS = {
    "Unspecified error": 0, "MPTCP-specific error": 1, "Lack of resources": 2,
    "Administratively prohibited": 3, "Too much outstanding data": 4,
    "Unacceptable performance": 5, "Middlebox interference": 6,
}

# A frame's first line: the frame number (``-#``, right-aligned in 5 columns), two spaces, the
# time. With ``-v`` the TCP part continues on the next line, indented, starting with an address.
_FRAME_LINE = re.compile(r"^\s*(\d+)  +\S")
_HEX = r"0x[0-9a-f]+"


def frames(path: str | Path) -> dict[int, str]:
    """Each frame's text, keyed by frame number, ``-v`` continuation lines joined to it."""
    out: dict[int, str] = {}
    current: int | None = None
    for line in Path(path).read_text().splitlines():
        match = _FRAME_LINE.match(line)
        if match:
            current = int(match.group(1))
            out[current] = line
        elif current is not None and line.strip():
            out[current] += " " + line.strip()
        elif line.strip():
            raise ValueError(f"{path}: text before the first frame: {line!r}")
    return out


def tcp_options(frame_text: str) -> list[str]:
    """The entries of the frame's TCP ``options [...]`` list, split at top-level commas.

    Entries nest brackets and commas of their own (``flags [AH]``, ``{0x1f..,0x29..}``,
    ``dss[bad opt]``), so this walks the text counting depth. Only the first ``options [`` is
    read: a TCP header quoted inside an ICMP error would come later, and these captures have none.
    """
    start = frame_text.find("options [")
    if start < 0:
        return []
    entries: list[str] = []
    depth, item = 0, ""
    for char in frame_text[start + len("options ["):]:
        if char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                entries.append(item.strip())
                return [e for e in entries if e]
            depth -= 1
        elif char == "," and depth == 0:
            entries.append(item.strip())
            item = ""
            continue
        item += char
    raise ValueError(f"unterminated options list: {frame_text!r}")


def mptcp_texts(frame_text: str) -> list[str]:
    """The MPTCP entries (``mptcp N ...``) of the frame's TCP options, in wire order."""
    return [entry for entry in tcp_options(frame_text) if entry.startswith("mptcp ")]


def parse_mptcp(text: str) -> dict[str, Any]:
    """The fields one tcpdump MPTCP option text proves, keyed as in ``as_dict()``."""
    match = re.fullmatch(r"mptcp (\d+) ([a-z-]+)(.*)", text)
    if not match or match.group(2) not in SUBTYPES:
        raise ValueError(f"not a tcpdump MPTCP option: {text!r}")
    length, name, rest = int(match.group(1)), match.group(2), match.group(3)
    expected: dict[str, Any] = {"subtype": SUBTYPES[name], "length": length, "malformed": ABSENT}
    if rest.endswith("[bad opt]"):
        # tcpdump's printer gave up on the bytes (what it printed before giving up is not a
        # field). It gives up when the option is too short for what its subtype needs, as in
        # mptcp-dss-oobr.pcap, and also when the TCP flags do not suit the handshake step (an
        # MP_CAPABLE of 12 bytes outside a SYN); a decoder that ignores TCP flags would decode
        # the latter. No capture here has one; if one appears, the comparison says so.
        expected["malformed"] = True
        return expected
    try:
        expected.update(_PARSERS[name](length, rest.strip()))
    except (ValueError, KeyError) as exc:
        raise ValueError(f"cannot read tcpdump's {name} text {text!r}: {exc}") from None
    return expected


def _fields(pattern: str, rest: str) -> dict[str, str | None]:
    match = re.fullmatch(pattern, rest)
    if not match:
        raise ValueError(f"{rest!r} does not match {pattern!r}")
    return match.groupdict()


def _capable(length: int, rest: str) -> dict[str, Any]:
    if rest.startswith("Unknown Version"):
        # tcpdump prints nothing else for versions other than 0 and 1.
        return {"version": int(str(_fields(r"Unknown Version \((?P<v>\d+)\)", rest)["v"]))}
    f = _fields(r"v(?P<version>\d+) flags \[(?P<flags>[A-H]+|none)\](?P<csum> csum)?"
                r"(?: \{(?P<keys>[^}]*)\})?", rest)
    flags = "" if f["flags"] == "none" else str(f["flags"])
    # The word "csum" is the A flag ("checksum required") again, not a checksum value.
    if bool(f["csum"]) != ("A" in flags):
        raise ValueError("tcpdump prints 'csum' exactly when the A flag is set")
    out: dict[str, Any] = {"version": int(str(f["version"])), "flags": flags}
    items = f["keys"].split(",") if f["keys"] else []
    keys: list[Any] = [int(item, 16) for item in items if item.startswith("0x")]
    out["sender_key"], out["receiver_key"] = keys + [ABSENT] * (2 - len(keys))
    data_len = [item for item in items if item.startswith("data_len=")]
    if data_len:
        out["data_level_len"] = int(data_len[0].split("=")[1])
    elif length < 22:
        out["data_level_len"] = ABSENT
    # Otherwise (22 bytes with the A flag) tcpdump does not print the data-level length: nothing
    # to compare it with. It never prints the 24-byte form's checksum either.
    if length < 24:
        out["checksum"] = ABSENT
    return out


def _join(length: int, rest: str) -> dict[str, Any]:
    if length == 24:
        f = _fields(r"hmac 0x(?P<hmac>[0-9a-f]{40})", rest)
        return {"hmac": f["hmac"]}
    head = r"(?P<backup>backup )?id (?P<addr_id>\d+) "
    if length == 12:
        f = _fields(head + rf"token (?P<token>{_HEX}) nonce (?P<nonce>{_HEX})", rest)
        out: dict[str, Any] = {"token": int(str(f["token"]), 16)}
    elif length == 16:
        f = _fields(head + rf"hmac (?P<hmac>{_HEX}) nonce (?P<nonce>{_HEX})", rest)
        out = {"truncated_hmac": int(str(f["hmac"]), 16)}
    else:
        raise ValueError(f"tcpdump prints a join of length {length} only as [bad opt]")
    out.update(backup=bool(f["backup"]), addr_id=int(str(f["addr_id"])),
               nonce=int(str(f["nonce"]), 16))
    return out


def dss_widths(length: int, ack: int | None, dsn: int | None,
               csum: bool) -> tuple[int | None, int | None]:
    """The data ACK and DSN widths (4 or 8 bytes) that the option's length leaves possible.

    tcpdump does not print the a and m flags. With one field present, or both the same width,
    the length settles them; a 4-byte data ACK with an 8-byte DSN has the same length as the
    reverse (22 bytes, 24 with a checksum), and then only a value above 2**32 tells: a width
    that stays undecided is None.
    """
    options = []
    for ack_w in ((4, 8) if ack is not None else (0,)):
        for dsn_w in ((4, 8) if dsn is not None else (0,)):
            total = 4 + ack_w + (dsn_w + 4 + 2 + (2 if csum else 0) if dsn is not None else 0)
            fits = (ack is None or ack < 1 << 8 * ack_w) and (dsn is None or dsn < 1 << 8 * dsn_w)
            if total == length and fits:
                options.append((ack_w, dsn_w))
    if not options:
        raise ValueError(f"no data ACK/DSN widths give a DSS of {length} bytes")
    ack_ws, dsn_ws = {a for a, _ in options}, {d for _, d in options}
    return (ack_ws.pop() if len(ack_ws) == 1 else None,
            dsn_ws.pop() if len(dsn_ws) == 1 else None)


def _dss(length: int, rest: str) -> dict[str, Any]:
    f = _fields(r"(?P<fin>fin ?)?(?:ack (?P<ack>\d+) ?)?"
                r"(?:seq (?P<dsn>\d+) subseq (?P<ssn>\d+) len (?P<len>\d+)"
                rf"(?: csum (?P<csum>{_HEX}))?)?", rest)
    ack = int(f["ack"]) if f["ack"] is not None else None
    dsn = int(f["dsn"]) if f["dsn"] is not None else None
    ack_w, dsn_w = dss_widths(length, ack, dsn, f["csum"] is not None)
    out: dict[str, Any] = {"data_fin": bool(f["fin"]), "data_ack": ABSENT, "dsn": ABSENT,
                           "ssn": ABSENT, "data_level_len": ABSENT, "checksum": ABSENT}
    if ack is not None:
        out["data_ack"] = ack
        if ack_w is not None:
            out["data_ack_len"] = ack_w
    if dsn is not None:
        out.update(dsn=dsn, ssn=int(str(f["ssn"])), data_level_len=int(str(f["len"])))
        if dsn_w is not None:
            out["dsn_len"] = dsn_w
        if f["csum"] is not None:
            out["checksum"] = int(f["csum"], 16)
    if ack_w is not None and dsn_w is not None:
        # The RFC letters, most significant first: F m M a A.
        out["flags"] = "".join(letter for letter, on in (
            ("F", out["data_fin"]), ("m", dsn_w == 8), ("M", dsn is not None),
            ("a", ack_w == 8), ("A", ack is not None)) if on)
    return out


def _add_addr(length: int, rest: str) -> dict[str, Any]:
    f = _fields(r"(?P<kind>v0-ip4|v0-ip6|v1-echo|v1|\[bad version/echo\]) id (?P<id>\d+) "
                rf"(?P<where>\S+)(?: hmac (?P<hmac>{_HEX}))?", rest)
    kind, where = str(f["kind"]), str(f["where"])
    out: dict[str, Any] = {"addr_id": int(str(f["id"]))}
    # The port is there exactly when the length says so; tcpdump then appends ":port", IPv6
    # addresses included, without brackets, so split at the last colon only then.
    if length in (10, 18, 22, 30):
        where, port = where.rsplit(":", 1)
        out["port"] = int(port)
    else:
        out["port"] = None
    out["addr"] = where
    if kind.startswith("v0-"):
        out.update(version=0, ipver=int(kind[-1]), echo=False, hmac=None)
    elif kind.startswith("v1"):
        out.update(version=1, echo=kind == "v1-echo")
        out["hmac"] = int(f["hmac"], 16) if f["hmac"] else None
    # "[bad version/echo]": tcpdump names neither version nor echo; the address is compared.
    return out


def _rem_addr(length: int, rest: str) -> dict[str, Any]:
    f = _fields(r"id(?P<ids>(?: \d+)+)", rest)
    return {"addr_ids": [int(i) for i in str(f["ids"]).split()]}


def _prio(length: int, rest: str) -> dict[str, Any]:
    f = _fields(r"(?P<b>backup|non-backup)(?: id (?P<id>\d+))?", rest)
    return {"backup": f["b"] == "backup",
            "addr_id": int(f["id"]) if f["id"] is not None else None}


def _fail(length: int, rest: str) -> dict[str, Any]:
    return {"dsn": int(str(_fields(r"seq (?P<dsn>\d+)", rest)["dsn"]))}


def _fast_close(length: int, rest: str) -> dict[str, Any]:
    return {"receiver_key": int(str(_fields(rf"key (?P<key>{_HEX})", rest)["key"]), 16)}


def _tcprst(length: int, rest: str) -> dict[str, Any]:
    f = _fields(r"flags \[(?P<flags>[UVWT]+|none)\] reason (?P<reason>.+)", rest)
    out: dict[str, Any] = {"flags": "" if f["flags"] == "none" else f["flags"]}
    reason = str(f["reason"])
    unknown = re.fullmatch(r"unknown \((0x[0-9a-f]{2})\)", reason)
    if unknown:
        out["reason"] = int(unknown.group(1), 16)
    else:
        out["reason"] = TCPRST_REASONS[reason]
        out["reason_name"] = reason
    return out


def _unknown(length: int, rest: str) -> dict[str, Any]:
    if rest:
        raise ValueError(f"tcpdump prints nothing after 'unknown', not {rest!r}")
    return {}


_PARSERS = {
    "capable": _capable, "join": _join, "dss": _dss, "add-addr": _add_addr,
    "rem-addr": _rem_addr, "prio": _prio, "fail": _fail, "fast-close": _fast_close,
    "tcprst": _tcprst, "unknown": _unknown,
}


def expected_options(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(frame number, the frame's MPTCP option texts) for every frame of an ``.out`` file."""
    for number, text in frames(path).items():
        yield number, mptcp_texts(text)
