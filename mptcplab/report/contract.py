"""The JSON contract of `mptcplab sniff --json` and `mptcplab decode --json`: one object per
segment (``{"type": "packet", ...}``) and, from the sniffer, the summary
(``{"type": "summary", ...}``). docs/sniff.md documents every field.

The two commands write the same packet objects. The sniffer tracks connections and checks what
the capture lets it check, so its objects also carry ``connection`` and ``subflow`` and, per
option, the verdicts (``*_valid``: true, false, or null when the capture lacks what the check
needs). `decode` looks at one segment at a time: those fields are absent from its objects,
never null (null would claim a check was tried).
"""

from __future__ import annotations

import json
from typing import Any

from mptcplab.analysis import SIDE_NAMES, Annotated, Connection, Subflow, Tally, Tracker
from mptcplab.decode import Segment


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# The fields each option carries in the JSON contract, in order; subtypes not listed here
# (MP_EXPERIMENTAL, UNKNOWN) keep every field the decoder gives. Verdicts (``*_valid``) follow.
JSON_OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "MP_CAPABLE": ("version", "flags", "sender_key", "receiver_key", "data_level_len",
                   "checksum"),
    "MP_JOIN": ("backup", "addr_id", "token", "nonce", "truncated_hmac", "hmac"),
    "DSS": ("data_ack", "data_ack_len", "dsn", "dsn_len", "ssn", "data_level_len", "checksum",
            "data_fin"),
    "ADD_ADDR": ("version", "echo", "addr_id", "addr", "port", "hmac"),
    "REMOVE_ADDR": ("addr_ids",),
    "MP_PRIO": ("backup", "addr_id"),
    "MP_FAIL": ("dsn",),
    "MP_FASTCLOSE": ("receiver_key",),
    "MP_TCPRST": ("flags", "reason", "reason_name"),
}
# What only the sniffer (tracking) knows: absent from `decode --json`.
TRACKED_PACKET_FIELDS = ("connection", "subflow")


def option_json(opt: dict[str, Any], verdicts: dict[str, Any] | None = None) -> dict[str, Any]:
    """An option as the contract names it: subtype, length, its fields, then the verdicts
    (``None``: not tracked, no verdict fields at all)."""
    out: dict[str, Any] = {"subtype": opt["subtype"], "length": opt["length"]}
    if opt.get("malformed"):
        out["malformed"] = True
        out["raw"] = opt["raw"]
        out["reason"] = opt["reason"]
        return out
    fields = JSON_OPTION_FIELDS.get(opt["subtype"])
    if fields is None:
        out.update(opt)
    else:
        for name in fields:
            if name in opt:
                out[name] = opt[name]
    if verdicts:
        out.update(verdicts)
    return out


def segment_json(seg: Segment) -> dict[str, Any]:
    """One packet object without tracking (`decode --json`)."""
    return {"type": "packet", "frame": seg.frame, "time": round(seg.time, 6), "src": seg.src,
            "sport": seg.sport, "dst": seg.dst, "dport": seg.dport, "tcp_flags": seg.tcp_flags,
            "seq": seg.seq, "ack": seg.ack, "payload_len": seg.payload_len,
            "options": [option_json(opt) for opt in seg.options]}


def packet_json(ann: Annotated) -> dict[str, Any]:
    """One packet object of the sniffer: the segment, its connection and subflow, the
    verdicts."""
    seg = ann.seg
    return {"type": "packet", "frame": seg.frame, "time": round(seg.time, 6), "src": seg.src,
            "sport": seg.sport, "dst": seg.dst, "dport": seg.dport, "tcp_flags": seg.tcp_flags,
            "seq": seg.seq, "ack": seg.ack, "payload_len": seg.payload_len,
            "connection": ann.connection, "subflow": ann.subflow,
            "options": [option_json(opt, ann.verdicts(i)) for i, opt in enumerate(seg.options)]}


# ---------------------------------------------------------------------------------------------
# The summary


def _tally(tally: Tally) -> dict[str, int]:
    return {"valid": tally.valid, "invalid": tally.invalid, "unchecked": tally.unchecked}


def subflow_json(sub: Subflow) -> dict[str, Any]:
    """A subflow of the summary; ``src`` is its initiator."""
    return {"subflow": sub.number, "src": sub.src, "sport": sub.sport, "dst": sub.dst,
            "dport": sub.dport, "via": sub.kind, "backup": sub.is_backup(),
            "bytes_to_server": sub.bytes_to_server(), "bytes_to_client": sub.bytes_to_client(),
            "mp_tcprst": sub.reset}


def connection_json(conn: Connection) -> dict[str, Any]:
    """A connection of the summary: keys, tokens, IDSNs, what was signalled, its subflows."""
    return {"connection": conn.number, "version": conn.version,
            "client_key": conn.keys[0], "server_key": conn.keys[1],
            "client_token": conn.tokens[0], "server_token": conn.tokens[1],
            "client_idsn": conn.idsns[0], "server_idsn": conn.idsns[1],
            "checksum": conn.checksum, "fallback": conn.fell_back(),
            "add_addrs": [{"frame": a["frame"], "by": SIDE_NAMES[a["side"]], "echo": a["echo"],
                           "addr_id": a["addr_id"], "addr": a["addr"], "port": a["port"],
                           "hmac": a["hmac"], "hmac_valid": a["hmac_valid"]}
                          for a in conn.add_addrs],
            "remove_addrs": [{"frame": r["frame"], "by": SIDE_NAMES[r["side"]],
                              "addr_ids": r["addr_ids"]} for r in conn.remove_addrs],
            "mp_fastclose": conn.fastclose, "mp_fail": conn.mp_fail,
            "subflows": [subflow_json(s) for s in conn.subflows]}


def summary_json(tracker: Tracker, capture: dict[str, int | None] | None = None
                 ) -> dict[str, Any]:
    """The ``{"type": "summary", ...}`` object: what the text summary shows, for programs.
    ``capture``: a live capture's counters (tcpdump's), when there was one."""
    out: dict[str, Any] = {
        "type": "summary", "packets": tracker.packets, "mptcp_packets": tracker.mptcp_packets,
        "hmacs": _tally(tracker.hmacs), "checksums": _tally(tracker.checksums),
        "connections": [connection_json(c) for c in tracker.connections],
        "orphans": [{"src": s.src, "sport": s.sport, "dst": s.dst, "dport": s.dport}
                    for s in tracker.orphans]}
    if capture is not None:
        out["capture"] = capture
    return out
