"""One JSON contract (docs/sniff.md), checked three ways on every capture:

* `decode --json` (both decoders) writes the sniffer's packet objects, minus what only tracking
  knows (``connection``, ``subflow``, the ``*_valid`` verdicts);
* `sniff --summary --json` holds everything the text summary shows, read back from the tables;
* tshark, an independent dissector, finds the same option fields in the same frames, and groups
  the frames into the same subflows and connections with the same tokens and IDSNs.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from capture_paths import OTHERS, OWN

from mptcplab.cli import main
from mptcplab.describe import endpoint
from mptcplab.wire import SUBTYPE_NAMES

CAPTURES = OWN + OTHERS
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None,
                                  reason="tshark not installed (Debian package tshark)")


def run(*argv: str) -> str:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    out.flush()
    return out.buffer.getvalue().decode()       # type: ignore[attr-defined]


@cache
def sniffed(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run("sniff", "-r", str(path), "--json").splitlines()]


@cache
def summary(path: Path) -> dict[str, Any]:
    return json.loads(run("sniff", "-r", str(path), "--summary", "--json"))


# ---------------------------------------------------------------------------------------------
# decode and sniff: one packet object


def untracked(packet: dict[str, Any]) -> dict[str, Any]:
    """A sniffer's packet object without what tracking adds."""
    out = {k: v for k, v in packet.items() if k not in ("connection", "subflow")}
    out["options"] = [{k: v for k, v in opt.items() if not k.endswith("_valid")}
                      for opt in packet["options"]]
    return out


@pytest.mark.parametrize("decoder", ["layers", "fast"])
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_decode_json_is_the_sniffers_objects_without_tracking(path: Path, decoder: str) -> None:
    argv = ["decode", str(path), "--json"] + (["--fast"] if decoder == "fast" else [])
    decoded = [json.loads(line) for line in run(*argv).splitlines()]
    packets = sniffed(path)
    assert decoded == [untracked(p) for p in packets]
    assert all("connection" in p and "connection" not in d for p, d in zip(packets, decoded))


# ---------------------------------------------------------------------------------------------
# The JSON summary holds what the text summary shows


def tables(text: str) -> list[list[dict[str, str]]]:
    """The tables of a text summary, each row as {header: cell} (columns from the dashes)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not line or set(line) != {"-", " "} or i == 0:
            continue
        spans, col = [], 0
        for part in line.split("  "):
            spans.append((col, col + len(part)))
            col += len(part) + 2
        header = [lines[i - 1][a:b].strip() for a, b in spans]
        rows = []
        for row in lines[i + 1:]:
            if not row.strip():
                break
            rows.append({h: row[a:b].strip() for h, (a, b) in zip(header, spans)})
        found.append(rows)
    return found


def _hex(value: int | None, width: int) -> str:
    return "-" if value is None else f"{value:#0{width + 2}x}"


def _mark(verdict: bool | None) -> str:
    return "?" if verdict is None else "✓" if verdict else "✗"


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_json_summary_holds_what_the_text_summary_shows(path: Path) -> None:
    text = run("sniff", "-r", str(path), "--summary")
    data = summary(path)
    conns = data["connections"]
    if conns:
        conn_rows, sub_rows = tables(text)
    else:
        conn_rows, sub_rows = [], []
    assert len(conn_rows) == len(conns)
    for row, c in zip(conn_rows, conns):
        assert row["conn"] == str(c["connection"])
        assert row["ver"] == ("-" if c["version"] is None else f"v{c['version']}")
        for side in ("client", "server"):
            assert row[f"{side} key"] == _hex(c[f"{side}_key"], 16)
            assert row[f"{side} token"] == _hex(c[f"{side}_token"], 8)
            assert row[f"{side} IDSN"] == _hex(c[f"{side}_idsn"], 16)
        assert row["csum"] == ("on" if c["checksum"] else "off")
        assert row["fallback"] == ("yes" if c["fallback"] else "no")
        announced = [f"id {a['addr_id']} {endpoint(a['addr'], a['port'])} by {a['by']}"
                     + (f" {_mark(a['hmac_valid'])}" if a["hmac"] is not None else "")
                     for a in c["add_addrs"] if not a["echo"]]
        echoes = sum(a["echo"] for a in c["add_addrs"])
        if echoes:
            announced.append(f"{echoes} echo{'es' if echoes > 1 else ''}")
        assert row["ADD_ADDR"] == ("; ".join(announced) or "-")
        assert row["REMOVE_ADDR"] == ("; ".join(
            f"ids {','.join(map(str, r['addr_ids']))} by {r['by']}"
            for r in c["remove_addrs"]) or "-")
        closed = [name for name, on in (("MP_FASTCLOSE", c["mp_fastclose"]),
                                        ("MP_FAIL", c["mp_fail"])) if on]
        assert row["closed by"] == (" ".join(closed) or "-")
    subs = [(c["connection"], s) for c in conns for s in c["subflows"]]
    assert len(sub_rows) == len(subs)
    for row, (number, s) in zip(sub_rows, subs):
        assert (row["conn"], row["subflow"]) == (str(number), str(s["subflow"]))
        assert row["initiator"] == endpoint(s["src"], s["sport"])
        assert row["listener"] == endpoint(s["dst"], s["dport"])
        assert row["via"] == s["via"]
        assert row["backup"] == ("yes" if s["backup"] else "no")
        assert row["bytes to server"] == str(s["bytes_to_server"])
        assert row["bytes to client"] == str(s["bytes_to_client"])
        assert row["MP_TCPRST"] == (s["mp_tcprst"] or "-")
    h, k = data["hmacs"], data["checksums"]
    tally = (f"{data['packets']} packets, {data['mptcp_packets']} with MPTCP options; "
             f"{len(conns)} connection{'s' if len(conns) != 1 else ''}, {len(subs)} "
             f"subflow{'s' if len(subs) != 1 else ''}; "
             f"HMACs {h['valid']} ✓ {h['invalid']} ✗ {h['unchecked']} ?; "
             f"DSS checksums {k['valid']} ✓ {k['invalid']} ✗ {k['unchecked']} ?")
    assert tally in text.splitlines()
    orphans = data["orphans"]
    if orphans:
        line = text.splitlines()[-1]
        assert line.startswith(f"{len(orphans)} more subflow(s) carried MPTCP options")
        assert all(f"{endpoint(o['src'], o['sport'])} > {endpoint(o['dst'], o['dport'])}"
                   in line for o in orphans[:4])
    else:
        assert "more subflow(s)" not in text


def test_the_summary_covers_every_kind_of_signal() -> None:
    """Across the captures, every part of the summary is exercised (else the comparison above
    would pass on empty lists)."""
    conns = [c for p in CAPTURES for c in summary(p)["connections"]]
    subs = [s for c in conns for s in c["subflows"]]
    assert any(a["echo"] for c in conns for a in c["add_addrs"])
    assert any(a["hmac_valid"] is True for c in conns for a in c["add_addrs"])
    assert any(c["remove_addrs"] for c in conns) and any(c["mp_fastclose"] for c in conns)
    assert any(s["mp_tcprst"] for s in subs) and any(s["backup"] for s in subs)
    assert {s["via"] for s in subs} == {"MP_CAPABLE", "MP_JOIN"}
    assert any(summary(p)["orphans"] for p in CAPTURES)
    assert any(summary(p)["checksums"]["valid"] for p in CAPTURES)


# ---------------------------------------------------------------------------------------------
# tshark, an independent decoder

SUBTYPE_IDS = {name: number for number, name in SUBTYPE_NAMES.items()}


def _only(opt: dict[str, Any], subtypes: tuple[str, ...], key: str) -> list[Any]:
    if opt["subtype"] in subtypes and opt.get(key) is not None:
        value = opt[key]
        return value if isinstance(value, list) else [value]
    return []


# tshark's field (tcp.options.mptcp.X) -> the values our JSON option gives for it. tshark 4.0
# does not show a DSS checksum (only MP_CAPABLE's), so DSS checksums are left to the
# verdicts; tcpdump's decodes (test_captures.py) cover them.
TSHARK_FIELDS = {
    "subtype": lambda o: [SUBTYPE_IDS.get(o["subtype"], o.get("subtype_id"))],
    "version": lambda o: _only(o, ("MP_CAPABLE",), "version"),
    "sendkey": lambda o: _only(o, ("MP_CAPABLE",), "sender_key"),
    "recvkey": lambda o: _only(o, ("MP_CAPABLE", "MP_FASTCLOSE"), "receiver_key"),
    "recvtok": lambda o: _only(o, ("MP_JOIN",), "token"),
    "sendrand": lambda o: _only(o, ("MP_JOIN",), "nonce"),
    "sendtrunchmac": lambda o: _only(o, ("MP_JOIN",), "truncated_hmac"),
    "sendhmac": lambda o: _only(o, ("MP_JOIN",), "hmac"),
    "addaddrtrunchmac": lambda o: _only(o, ("ADD_ADDR",), "hmac"),
    "rawdataack": lambda o: _only(o, ("DSS",), "data_ack"),
    "rawdataseqno": lambda o: _only(o, ("DSS",), "dsn"),
    "subflowseqno": lambda o: _only(o, ("DSS",), "ssn"),
    "datalvllen": lambda o: _only(o, ("DSS", "MP_CAPABLE"), "data_level_len"),
    "checksum": lambda o: _only(o, ("MP_CAPABLE",), "checksum"),
    "addrid": lambda o: (_only(o, ("REMOVE_ADDR",), "addr_ids")
                         + _only(o, ("MP_JOIN", "ADD_ADDR", "MP_PRIO"), "addr_id")),
    "ipv4": lambda o: [a for a in _only(o, ("ADD_ADDR",), "addr") if ":" not in a],
    "ipv6": lambda o: [a for a in _only(o, ("ADD_ADDR",), "addr") if ":" in a],
    "port": lambda o: _only(o, ("ADD_ADDR",), "port"),
    "echo": lambda o: [int(o["echo"])] if o["subtype"] == "ADD_ADDR" and o["version"] else [],
    "rst_reason": lambda o: _only(o, ("MP_TCPRST",), "reason"),
    "backup.flag": lambda o: [int(v) for v in _only(o, ("MP_JOIN", "MP_PRIO"), "backup")],
    "datafin.flag": lambda o: [int(v) for v in _only(o, ("DSS",), "data_fin")],
}


def _tshark_value(field: str, text: str) -> Any:
    if field == "ipv4" or field == "ipv6":
        return text
    if field == "sendhmac":
        return text.replace(":", "")
    return int(text, 0)


@cache
def tshark(path: Path) -> dict[int, dict[str, list[Any]]]:
    """Per frame, each field's values in option order (tshark -T fields, all occurrences)."""
    fields = [f"tcp.options.mptcp.{f}" for f in TSHARK_FIELDS] + [
        "tcp.stream", "mptcp.stream", "mptcp.expected_token", "mptcp.expected_idsn"]
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a",
            "-E", "aggregator=,", "-e", "frame.number"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout
    frames = {}
    for line in out.splitlines():
        number, *cells = line.split("\t")
        frames[int(number)] = {
            field.removeprefix("tcp.options.mptcp."):
                [_tshark_value(field.removeprefix("tcp.options.mptcp."), v)
                 for v in cell.split(",") if v]
            for field, cell in zip(fields, cells)}
    return frames


@needs_tshark
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_json_options_agree_with_tshark(path: Path) -> None:
    theirs = tshark(path)
    packets = sniffed(path)
    compared = 0
    for p in packets:
        frame = theirs[p["frame"]]
        for field, ours in TSHARK_FIELDS.items():
            values = [v for o in p["options"] for v in
                      (ours(o) if not o.get("malformed") or field == "subtype" else [])]
            assert values == frame[field], \
                f"frame {p['frame']} {field}: ours {values}, tshark {frame[field]}"
            compared += len(values)
    # and tshark sees MPTCP on no frame we do not list
    listed = {p["frame"] for p in packets}
    assert [n for n, f in theirs.items() if f["subtype"] and n not in listed] == []
    assert compared >= len(packets)


@needs_tshark
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_subflows_connections_tokens_and_idsns_agree_with_tshark(path: Path) -> None:
    """tshark's MPTCP analysis groups TCP streams into MPTCP streams by token, as the tracker
    groups subflows into connections: the two groupings must be the same partition, with the
    same tokens and IDSNs."""
    theirs = tshark(path)
    streams: dict[tuple[int, int], set[int]] = {}
    mptcp: dict[int, set[int]] = {}
    for p in sniffed(path):
        if p["connection"] is None:
            continue
        frame = theirs[p["frame"]]
        streams.setdefault((p["connection"], p["subflow"]), set()).update(frame["tcp.stream"])
        mptcp.setdefault(p["connection"], set()).update(frame["mptcp.stream"])
    # one TCP stream per subflow, a different one for each
    assert all(len(s) == 1 for s in streams.values()), streams
    assert len({next(iter(s)) for s in streams.values()}) == len(streams)
    # one MPTCP stream per connection, a different one for each
    assert all(len(s) == 1 for s in mptcp.values()), mptcp
    assert len({next(iter(s)) for s in mptcp.values()}) == len(mptcp)
    by_stream = {next(iter(s)): c for c, s in mptcp.items()}
    tokens: dict[int, set[int]] = {}
    idsns: dict[int, set[int]] = {}
    for frame in theirs.values():
        for stream in frame["mptcp.stream"]:
            if stream in by_stream:
                tokens.setdefault(by_stream[stream], set()).update(frame["mptcp.expected_token"])
                idsns.setdefault(by_stream[stream], set()).update(frame["mptcp.expected_idsn"])
    for conn in summary(path)["connections"]:
        n = conn["connection"]
        if n not in mptcp:
            continue
        assert tokens.get(n, set()) <= {conn["client_token"], conn["server_token"]}
        assert idsns.get(n, set()) <= {conn["client_idsn"], conn["server_idsn"]}
        if None not in (conn["client_key"], conn["server_key"]):
            assert tokens[n] == {conn["client_token"], conn["server_token"]}
            assert idsns[n] == {conn["client_idsn"], conn["server_idsn"]}
