"""One line of words for a decoded MPTCP option, from its field dictionary.

The layers' ``summary()`` and every decoder's text output go through ``describe``, so an option
reads the same wherever it is shown: ``MP_JOIN SYN B=1 id=2 token=0x1a2b3c4d nonce=0x…``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mptcplab.wire import flag_letters

__all__ = ["JOIN_STAGES", "capable_stage", "describe", "endpoint", "flag_letters"]

# MP_CAPABLE's step by length, RFC 8684 (v1): 4 SYN, 12 SYN-ACK; RFC 6824 (v0): 12 in both.
_CAPABLE_STAGES = {4: "SYN", 20: "ACK", 22: "ACK+data", 24: "ACK+data+csum"}
JOIN_STAGES = {12: "SYN", 16: "SYN-ACK", 24: "ACK"}


def capable_stage(length: int, version: int, tcp_flags: str | None = None) -> str:
    """Which handshake step an MP_CAPABLE of this length is: the TCP flags decide where they
    are known ("S" SYN, "SA" SYN-ACK); otherwise the length, and for 12 bytes the version
    (v1: the SYN-ACK; v0 uses 12 bytes on the SYN and on the SYN-ACK alike)."""
    if tcp_flags is not None and "S" in tcp_flags:
        return "SYN-ACK" if "A" in tcp_flags else "SYN"
    if length == 12:
        return "SYN-ACK" if version == 1 else "SYN or SYN-ACK"
    return _CAPABLE_STAGES.get(length, "?")


def endpoint(addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _capable(d: dict[str, Any], tcp_flags: str | None = None) -> str:
    parts = [f"MP_CAPABLE v{d['version']} {capable_stage(d['length'], d['version'], tcp_flags)} "
             f"flags={d['flags'] or 'none'}"]
    for key in ("sender_key", "receiver_key"):
        if key in d:
            parts.append(f"{key}={d[key]:#018x}")
    if "data_level_len" in d:
        parts.append(f"data_level_len={d['data_level_len']}")
    if "checksum" in d:
        parts.append(f"checksum={d['checksum']:#06x}")
    return " ".join(parts)


def _join(d: dict[str, Any]) -> str:
    stage = JOIN_STAGES.get(d["length"], "?")
    if stage == "ACK":
        return f"MP_JOIN ACK hmac={d['hmac']}"
    head = f"MP_JOIN {stage} B={int(d['backup'])} id={d['addr_id']}"
    if stage == "SYN":
        return f"{head} token={d['token']:#010x} nonce={d['nonce']:#010x}"
    return f"{head} truncated_hmac={d['truncated_hmac']:#018x} nonce={d['nonce']:#010x}"


def _dss(d: dict[str, Any]) -> str:
    parts = ["DSS"]
    if d["data_fin"]:
        parts.append("DATA_FIN")
    if "data_ack" in d:
        parts.append(f"data_ack={d['data_ack']}" + ("" if d["data_ack_len"] == 8 else "/32"))
    if "dsn" in d:
        parts.append(f"dsn={d['dsn']}" + ("" if d["dsn_len"] == 8 else "/32"))
        parts.append(f"ssn={d['ssn']}")
        length = d["data_level_len"]
        parts.append(f"len={length}" + (" (infinite mapping)" if length == 0 else ""))
        if "checksum" in d:
            parts.append(f"checksum={d['checksum']:#06x}")
    return " ".join(parts)


def _add_addr(d: dict[str, Any]) -> str:
    where = endpoint(d["addr"], d["port"])
    if d.get("version") == 0:
        return f"ADD_ADDR v0 IPv{d['ipver']} id={d['addr_id']} {where}"
    text = f"{'ADD_ADDR echo' if d['echo'] else 'ADD_ADDR'} id={d['addr_id']} {where}"
    if d["hmac"] is not None:
        text += f" hmac={d['hmac']:#018x}"
    return text


def _prio(d: dict[str, Any]) -> str:
    text = f"MP_PRIO B={int(d['backup'])}"
    return text if d["addr_id"] is None else f"{text} id={d['addr_id']}"


_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "MP_CAPABLE": _capable,
    "MP_JOIN": _join,
    "DSS": _dss,
    "ADD_ADDR": _add_addr,
    "REMOVE_ADDR": lambda d: "REMOVE_ADDR ids=" + ",".join(map(str, d["addr_ids"])),
    "MP_PRIO": _prio,
    "MP_FAIL": lambda d: f"MP_FAIL dsn={d['dsn']}",
    "MP_FASTCLOSE": lambda d: f"MP_FASTCLOSE receiver_key={d['receiver_key']:#018x}",
    "MP_TCPRST": lambda d: (f"MP_TCPRST flags={d['flags'] or 'none'} "
                            f"reason={d['reason_name']} ({d['reason']})"),
    "MP_EXPERIMENTAL": lambda d: (f"MP_EXPERIMENTAL nibble={d['nibble']:#x} "
                                  f"data={d['data'] or '-'}"),
    "UNKNOWN": lambda d: f"MPTCP subtype {d['subtype_id']:#x} (unknown) raw={d['raw']}",
}


def describe(d: dict[str, Any], tcp_flags: str | None = None) -> str:
    """The option described in words (``d`` as ``as_dict()`` returns it); ``tcp_flags`` (as
    Scapy prints them, "S", "SA", "A"...) tell a SYN from a SYN-ACK where the length cannot."""
    if d.get("malformed"):
        return f"MPTCP malformed ({d['reason']}) raw={d['raw']}"
    if d["subtype"] == "MP_CAPABLE":
        return _capable(d, tcp_flags)
    return _RENDERERS[d["subtype"]](d)
