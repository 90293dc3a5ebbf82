"""One line of words per segment, for people: tcpdump-like, with MPTCP options described."""

from __future__ import annotations

from typing import Any

from mptcplab.analysis import Annotated
from mptcplab.decode import Segment
from mptcplab.describe import describe, endpoint


def segment_line(seg: Segment) -> str:
    """``frame  src > dst [flags] seq ack len | option; option``, tcpdump-like."""
    head = (f"{seg.frame:6d}  {endpoint(seg.src, seg.sport)} > {endpoint(seg.dst, seg.dport)} "
            f"[{seg.tcp_flags}] seq {seg.seq} ack {seg.ack} len {seg.payload_len}")
    if not seg.options:
        return head
    return head + "  | " + "; ".join(describe(opt, seg.tcp_flags) for opt in seg.options)



UNICODE_MARKS = ("✓", "✗", "?")
ASCII_MARKS = ("ok", "BAD", "?")


def _mark(verdict: bool | None, marks: tuple[str, str, str]) -> str:
    return marks[2] if verdict is None else marks[0] if verdict else marks[1]


def _relative(value: int, length: int, base: int | None) -> int:
    if base is None:
        return value
    return (value - base) & (0xFFFFFFFFFFFFFFFF if length == 8 else 0xFFFFFFFF)


def _dss_words(opt: dict[str, Any], own: int | None, peer: int | None) -> str:
    """DSS with data_ack and DSN relative to the IDSNs (first byte = 1) when they are known."""
    parts = ["DSS"]
    if opt["data_fin"]:
        parts.append("DATA_FIN")
    if "data_ack" in opt:
        parts.append(f"ack {_relative(opt['data_ack'], opt['data_ack_len'], peer)}")
    if "dsn" in opt:
        parts.append(f"dsn {_relative(opt['dsn'], opt['dsn_len'], own)} ssn {opt['ssn']} "
                     f"len {opt['data_level_len']}")
        if opt["data_level_len"] == 0:
            parts.append("(infinite mapping)")
        if "checksum" in opt:
            parts.append(f"csum {opt['checksum']:#06x}")
    return " ".join(parts)


def sniff_line(ann: Annotated, t0: float,
               marks: tuple[str, str, str] = UNICODE_MARKS) -> str:
    """``frame time cC sS src > dst [flags] seq ack len | options``: tcpdump-like, with the
    connection and subflow numbers, relative sequence numbers and DSNs, and verdicts."""
    seg, half = ann.seg, ann.half
    ids = (f"c{ann.connection if ann.connection is not None else '-'} "
           f"s{ann.subflow if ann.subflow is not None else '-'}")
    seq, ack = seg.seq, seg.ack
    own = peer = None
    if half is not None:
        sub = half.subflow
        other = sub.rev if half is sub.fwd else sub.fwd
        if half.isn >= 0:
            seq = (seq - half.isn) & 0xFFFFFFFF
        if other.isn >= 0:
            ack = (ack - other.isn) & 0xFFFFFFFF
        side = half.side
        if sub.conn is not None and side is not None:
            own, peer = sub.conn.idsns[side], sub.conn.idsns[1 - side]
    seq_text = f"{seq}:{(seq + seg.payload_len) & 0xFFFFFFFF}" if seg.payload_len else f"{seq}"
    head = (f"{seg.frame:7d} {seg.time - t0:11.6f} {ids:7s} {endpoint(seg.src, seg.sport)} > "
            f"{endpoint(seg.dst, seg.dport)} [{seg.tcp_flags}] seq {seq_text}"
            + (f" ack {ack}" if "A" in seg.tcp_flags else "") + f" len {seg.payload_len}")
    words = []
    for i, opt in enumerate(seg.options):
        text = _dss_words(opt, own, peer) if opt["subtype"] == "DSS" and not opt.get(
            "malformed") else describe(opt, seg.tcp_flags)
        for name, verdict in ann.verdicts(i).items():
            if name != "hmac_valid" or opt.get("hmac") is not None or "truncated_hmac" in opt:
                text += " " + _mark(verdict, marks)
        words.append(text)
    return head + "  | " + "; ".join(words) if words else head


