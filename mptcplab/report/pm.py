"""Path-manager output: events as `ip mptcp monitor` prints them (same names, same key=value
fields, same order), their JSON, endpoints as `ip mptcp endpoint show` lists them, and the
daemon's log lines."""

from __future__ import annotations

import socket
import time
from typing import Any

from mptcplab.pm import netlink as nl
from mptcplab.pm.events import Event


def event_line(ev: Event) -> str:
    """One event, exactly as iproute2's `ip mptcp monitor` formats it."""
    if type(ev) is Event:
        return f"[UNKNOWN {ev.type}]"
    a = ev.attrs
    out = [f"[{ev.NAME:>16}]"]
    if ev.token is not None:
        out.append(f"token={ev.token:08x}")
    if ev.rem_id is not None:
        out.append(f"remid={ev.rem_id}")
    if ev.loc_id is not None:
        out.append(f"locid={ev.loc_id}")
    for key, attr in (("saddr4", "MPTCP_ATTR_SADDR4"), ("daddr4", "MPTCP_ATTR_DADDR4"),
                      ("saddr6", "MPTCP_ATTR_SADDR6"), ("daddr6", "MPTCP_ATTR_DADDR6")):
        if isinstance(a.get(attr), str):
            out.append(f"{key}={a[attr]}")
    for key in ("sport", "dport", "backup", "error"):
        value = getattr(ev, key)
        if value is not None:
            out.append(f"{key}={value}")
    if ev.flags is not None:
        out.append(f"flags={ev.flags:x}")
    if ev.timeout is not None:
        out.append(f"timeout={ev.timeout}")
    if ev.if_idx is not None:
        out.append(f"ifindex={ev.if_idx}")
    if ev.reset_reason is not None:
        out.append(f"reset_reason={ev.reset_reason}")
    if ev.reset_flags is not None:
        out.append(f"reset_flags=0x{ev.reset_flags:x}")
    return " ".join(out)


def event_json(ev: Event) -> dict[str, Any]:
    """An event for `--json`: every field the kernel sent, names in snake_case, the token as
    the number MPTCP_INFO gives (mptcpi_token), flags by name."""
    out: dict[str, Any] = {"type": "event", "event": ev.KIND if type(ev) is not Event
                           else f"unknown_{ev.type}", "time": round(ev.time, 6)}
    for key in ("token", "family", "loc_id", "rem_id", "saddr", "daddr", "sport", "dport",
                "backup", "error", "timeout", "if_idx", "reset_reason", "reset_flags"):
        value = getattr(ev, key)
        if value is not None:
            out[key] = value
    if out.get("family") is not None:
        out["family"] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}.get(
            out["family"], out["family"])
    if ev.flags is not None:
        out["flags"] = [n for n, bit in nl.EVENT_FLAGS.items() if ev.flags & bit]
    side = ev.server_side
    if side is not None:
        out["server_side"] = side
    unknown = {k: v.hex() if isinstance(v, bytes) else v for k, v in ev.attrs.items()
               if k.startswith("ATTR_")}
    if unknown:
        out["unknown_attrs"] = unknown
    return out


def endpoint_line(ep: dict[str, Any], ifname: str | None = None) -> str:
    """`10.0.2.1 port 1000 id 2 signal backup dev eth1`, as `ip mptcp endpoint show`."""
    parts = [ep["addr"] or "?"]
    if ep.get("port"):
        parts.append(f"port {ep['port']}")
    parts.append(f"id {ep['id']}")
    parts += ep["flags"]
    if ep.get("rawflags"):
        parts.append(f"rawflags {ep['rawflags']:02x}")
    if ep.get("ifindex"):
        parts.append(f"dev {ifname or ep['ifindex']}")
    return " ".join(parts)


def limits_line(limits: dict[str, int]) -> str:
    return f"add_addr_accepted {limits['add_addr_accepted']} subflows {limits['subflows']}"


def record_line(rec: dict[str, Any]) -> str:
    """A daemon log record for people: time, what, the connection, details, why."""
    stamp = time.strftime("%H:%M:%S", time.localtime(rec["time"])) + \
        f".{int(rec['time'] * 1000) % 1000:03d}"
    action = rec["action"]
    head = [stamp, action]
    if "token" in rec:
        head.append(f"{rec['token']:08x}")
    details = []
    if action == "subflow_create":
        local = _ep(rec["local"], rec.get("local_port"))
        remote = _ep(rec["remote"], rec.get("remote_port"))
        details.append(f"{local} -> {remote} id {rec.get('local_id')}"
                       + (" backup" if rec.get("backup") else ""))
    elif "subflow" in rec:
        details.append(rec["subflow"])
    elif action == "announce":
        details.append(f"{_ep(rec['addr'], rec.get('port'))} id {rec['id']}")
    elif action == "remove":
        details.append(f"id {rec['id']}")
    elif action == "event":
        details.append(rec.get("event", ""))
        details += [f"{k}={v}" for k, v in rec.items()
                    if k not in ("type", "time", "action", "event", "token", "policy")]
    elif action in ("link_up", "link_down", "address_added", "address_removed"):
        details.append(" ".join(str(rec[k]) for k in ("ifname", "addr") if k in rec))
    elif action == "stop":
        details.append(", ".join(f"{k} {rec[k]}" for k in
                                 ("events", "decisions", "errors", "enobufs", "resyncs",
                                  "learned") if k in rec))
    elif action in ("learned", "resync") and rec.get("tokens"):
        details.append(" ".join(rec["tokens"]))
    if "ok" in rec:
        details.append("ok" if rec["ok"] else f"FAILED: {rec.get('error')}")
        if rec.get("since_created_ms") is not None:
            details.append(f"({rec['since_created_ms']:.1f} ms after CREATED)")
    line = "  ".join(h for h in head if h) + ("  " + " ".join(d for d in details if d)
                                               if details else "")
    if rec.get("reason"):
        line += f"  -- {rec['reason']}"
    return line


def _ep(addr: str, port: int | None) -> str:
    text = f"[{addr}]" if ":" in addr and port else addr
    return f"{text}:{port}" if port else text
