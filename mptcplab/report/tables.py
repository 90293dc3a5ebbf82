"""Tables for people: the sniffer's summary (connections, then their subflows) and the subflow
table of `mptcplab nc --subflows`."""

from __future__ import annotations

from typing import Any

from mptcplab.analysis import SIDE_NAMES, Tracker
from mptcplab.describe import endpoint
from mptcplab.report.lines import UNICODE_MARKS, _mark


def table(rows: list[list[object]], headers: list[str]) -> str:
    """Rows under headers in tabulate's "simple" format, without importing tabulate (with
    wcwidth it costs the sniffer's start-up ~60 ms): columns of integers right-aligned,
    others left, each at least two wider than its header, lines without trailing blanks.
    The tests hold it to tabulate's output. Cells are one line of single-width text."""
    numeric = [bool(rows) and all(type(row[i]) is int for row in rows)
               for i in range(len(headers))]
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(header) + 2] + [len(row[i]) for row in cells])
              for i, header in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths),
                      *(line(row) for row in cells)])


def _hex(value: int | None, width: int) -> str:
    return "-" if value is None else f"{value:#0{width + 2}x}"


def summary_text(tracker: Tracker, marks: tuple[str, str, str] = UNICODE_MARKS) -> str:
    """The tables printed when the sniffer stops: connections, then their subflows."""
    conns: list[list[object]] = []
    subs: list[list[object]] = []
    for c in tracker.connections:
        announced = [f"id {a['addr_id']} {endpoint(a['addr'], a['port'])} by "
                     f"{SIDE_NAMES[a['side']]}"
                     + (f" {_mark(a['hmac_valid'], marks)}" if a["hmac"] is not None else "")
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
            subs.append([c.number, s.number, endpoint(s.src, s.sport), endpoint(s.dst, s.dport),
                         s.kind, "yes" if s.is_backup() else "no", s.bytes_to_server(),
                         s.bytes_to_client(), s.reset or "-"])
    out = []
    if conns:
        out.append(table(conns, [
            "conn", "ver", "client key", "client token", "client IDSN", "server key",
            "server token", "server IDSN", "csum", "fallback", "ADD_ADDR", "REMOVE_ADDR",
            "closed by"]))
        out.append("")
        out.append(table(subs, [
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


def nc_subflow_table(sample: Any, final: bool = False) -> str:
    """`mptcplab nc --subflows`: a title line with the connection's totals, then one row per
    subflow (kernel id, addresses, backup, bytes, RTT, cwnd, state)."""
    from tabulate import tabulate

    if sample.mptcp:
        what = f"MPTCP connection, token {sample.token:#010x}" if sample.token \
            else "MPTCP connection"
    elif sample.fallback:
        what = "connection fell back to plain TCP"
    else:
        what = "plain TCP connection"
    title = (f"{'final: ' if final else ''}{what}, {sample.elapsed:.1f} s: "
             f"sent {sample.bytes_sent} B, received {sample.bytes_received} B"
             + (f", {len(sample.subflows)} subflows" if sample.mptcp else ""))
    rows = [["-" if r.id is None else r.id, r.local, r.remote, r.backup, r.bytes_sent,
             r.bytes_received, f"{r.rtt_ms:.2f}", r.cwnd, r.state] for r in sample.subflows]
    table = tabulate(rows, headers=["id", "local", "remote", "backup", "sent B", "received B",
                                    "rtt ms", "cwnd", "state"],
                     colalign=("right", "left", "left", "left", "right", "right", "right",
                               "right", "left"))
    return title + "\n" + table
