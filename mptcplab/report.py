"""Rendering for people and for programs: text lines, JSON lines."""

from __future__ import annotations

import json
from typing import Any

from mptcplab.decode import Segment
from mptcplab.layers.describe import describe


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def segment_line(seg: Segment) -> str:
    """``frame  src > dst [flags] seq ack len | option; option``, tcpdump-like."""
    head = (f"{seg.frame:6d}  {_endpoint(seg.src, seg.sport)} > {_endpoint(seg.dst, seg.dport)} "
            f"[{seg.tcp_flags}] seq {seg.seq} ack {seg.ack} len {seg.payload_len}")
    if not seg.options:
        return head
    return head + "  | " + "; ".join(describe(opt) for opt in seg.options)


def json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))
