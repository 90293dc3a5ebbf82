"""Rendering for people and for programs: text lines, JSON lines, summary tables."""

from __future__ import annotations

import json
from typing import Any

from mptcplab.analysis import SIDE_NAMES, Annotated, Tracker
from mptcplab.decode import Segment
from mptcplab.describe import describe, endpoint


def segment_line(seg: Segment) -> str:
    """``frame  src > dst [flags] seq ack len | option; option``, tcpdump-like."""
    head = (f"{seg.frame:6d}  {endpoint(seg.src, seg.sport)} > {endpoint(seg.dst, seg.dport)} "
            f"[{seg.tcp_flags}] seq {seg.seq} ack {seg.ack} len {seg.payload_len}")
    if not seg.options:
        return head
    return head + "  | " + "; ".join(describe(opt) for opt in seg.options)


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# The sniffer's output: JSON lines (a contract), text lines and summary tables (for people)

# The fields each option carries in the JSON contract, in order; subtypes not listed here
# (MP_EXPERIMENTAL, UNKNOWN) keep every field the decoder gives. Verdicts (``*_valid``) follow.
JSON_OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "MP_CAPABLE": ("version", "flags", "sender_key", "receiver_key", "data_level_len",
                   "checksum"),
    "MP_JOIN": ("backup", "addr_id", "token", "nonce", "truncated_hmac", "hmac"),
    "DSS": ("data_ack", "dsn", "ssn", "data_level_len", "checksum", "data_fin"),
    "ADD_ADDR": ("echo", "addr_id", "addr", "port", "hmac"),
    "REMOVE_ADDR": ("addr_ids",),
    "MP_PRIO": ("backup", "addr_id"),
    "MP_FAIL": ("dsn",),
    "MP_FASTCLOSE": ("receiver_key",),
    "MP_TCPRST": ("flags", "reason", "reason_name"),
}


def option_json(opt: dict[str, Any], verdicts: dict[str, Any]) -> dict[str, Any]:
    """An option as the ``--json`` contract names it: subtype, length, its fields, verdicts."""
    out: dict[str, Any] = {"subtype": opt["subtype"], "length": opt["length"]}
    if opt.get("malformed"):
        out["malformed"] = True
        out["raw"] = opt["raw"]
        return out
    fields = JSON_OPTION_FIELDS.get(opt["subtype"])
    if fields is None:
        out.update(opt)
    else:
        for name in fields:
            if name in opt:
                out[name] = opt[name]
    out.update(verdicts)
    return out


def packet_json(ann: Annotated) -> dict[str, Any]:
    """One ``{"type": "packet", ...}`` object of the ``--json`` contract."""
    seg = ann.seg
    return {"type": "packet", "frame": seg.frame, "time": round(seg.time, 6), "src": seg.src,
            "sport": seg.sport, "dst": seg.dst, "dport": seg.dport, "tcp_flags": seg.tcp_flags,
            "seq": seg.seq, "ack": seg.ack, "payload_len": seg.payload_len,
            "connection": ann.connection, "subflow": ann.subflow,
            "options": [option_json(opt, ann.verdicts(i)) for i, opt in enumerate(seg.options)]}


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
            "malformed") else describe(opt)
        for name, verdict in ann.verdicts(i).items():
            if name != "hmac_valid" or opt.get("hmac") is not None or "truncated_hmac" in opt:
                text += " " + _mark(verdict, marks)
        words.append(text)
    return head + "  | " + "; ".join(words) if words else head


def _hex(value: int | None, width: int) -> str:
    return "-" if value is None else f"{value:#0{width + 2}x}"


def summary_text(tracker: Tracker, marks: tuple[str, str, str] = UNICODE_MARKS) -> str:
    """The tables printed when the sniffer stops: connections, then their subflows."""
    from tabulate import tabulate

    conns, subs = [], []
    for c in tracker.connections:
        announced = [f"id {a['addr_id']} {endpoint(a['addr'], a['port'])} by "
                     f"{SIDE_NAMES[a['side']]}"
                     + (f" {_mark(a['hmac_valid'], marks)}" if a["hmac"] else "")
                     for a in c.add_addrs if not a["echo"]]
        echoed = sum(1 for a in c.add_addrs if a["echo"])
        if echoed:
            announced.append(f"{echoed} echo{'es' if echoed > 1 else ''}")
        removed = [f"ids {','.join(map(str, r['addr_ids']))} by {SIDE_NAMES[r['side']]}"
                   for r in c.remove_addrs]
        flags = [w for w, on in (("MP_FASTCLOSE", c.fastclose), ("MP_FAIL", c.mp_fail)) if on]
        conns.append([c.number, "-" if c.version is None else f"v{c.version}",
                      _hex(c.keys[0], 16), _hex(c.tokens[0], 8), _hex(c.idsns[0], 16),
                      _hex(c.keys[1], 16), _hex(c.tokens[1], 8), _hex(c.idsns[1], 16),
                      "on" if c.checksum else "off", "yes" if c.fell_back() else "no",
                      "; ".join(announced) or "-", "; ".join(removed) or "-",
                      " ".join(flags) or "-"])
        for s in c.subflows:
            d = s.as_dict()
            subs.append([c.number, s.number, endpoint(s.src, s.sport), endpoint(s.dst, s.dport),
                         s.kind, "yes" if d["backup"] else "no", d["bytes_to_server"],
                         d["bytes_to_client"], s.reset or "-"])
    out = []
    if conns:
        out.append(tabulate(conns, headers=[
            "conn", "ver", "client key", "client token", "client IDSN", "server key",
            "server token", "server IDSN", "csum", "fallback", "ADD_ADDR", "REMOVE_ADDR",
            "closed by"]))
        out.append("")
        out.append(tabulate(subs, headers=[
            "conn", "subflow", "initiator", "listener", "via", "backup", "bytes to server",
            "bytes to client", "MP_TCPRST"]))
        out.append("")
    hv, hi, hu = tracker.hmacs.as_tuple()
    cv, ci, cu = tracker.checksums.as_tuple()
    nsub = sum(len(c.subflows) for c in tracker.connections)
    out.append(f"{tracker.packets} packets, {tracker.mptcp_packets} with MPTCP options; "
               f"{len(tracker.connections)} "
               f"connection{'s' if len(tracker.connections) != 1 else ''}"
               f", {nsub} subflow{'s' if nsub != 1 else ''}; "
               f"HMACs {hv} {marks[0]} {hi} {marks[1]} {hu} {marks[2]}; "
               f"DSS checksums {cv} {marks[0]} {ci} {marks[1]} {cu} {marks[2]}")
    if tracker.orphans:
        out.append(f"{len(tracker.orphans)} more subflow(s) carried MPTCP options but their "
                   "handshake was not captured: "
                   + ", ".join(f"{endpoint(s.src, s.sport)} > {endpoint(s.dst, s.dport)}"
                               for s in tracker.orphans[:4])
                   + (" ..." if len(tracker.orphans) > 4 else ""))
    return "\n".join(out)
