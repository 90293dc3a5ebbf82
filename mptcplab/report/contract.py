"""The JSON contract shared by `mptcplab decode --json` and `mptcplab sniff --json`: one object
per segment (``{"type": "packet", ...}``), options named as the layers name them, verdicts added
by the tracker, and the summary (``{"type": "summary", ...}``). docs/sniff.md documents it."""

from __future__ import annotations

import json
from typing import Any

from mptcplab.analysis import Annotated


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))



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


