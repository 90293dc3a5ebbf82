"""The teaching demos, run headless (root): each states only facts it checked, and these tests
hold each demo to the facts it claims, against the capture, the kernel and the pictures.
Every demo runs in its own fresh lab; the slow ones run with shorter options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from topo_fixtures import (
    lab_ids_of_pid,
    namespaces_of,
    needs_nft,
    needs_root,
    needs_tcpdump,
    wait_line,
)

from mptcplab.analysis import CLIENT, SERVER
from mptcplab.decode import decode_file
from mptcplab.demo import Outcome, entries, run_demo
from mptcplab.facts import has
from mptcplab.report.ladder import Arrow, Event
from mptcplab.report.svg import overlapping, text_boxes

pytestmark = [needs_root, needs_tcpdump]


def demo(name: str, tmp_path: Path, **options: object) -> Outcome:
    said: list[str] = []
    outcome = run_demo(name, out=tmp_path, options=options, say=said.append)
    failed = [f"{c.text} ({c.detail})" for c in outcome.claims if not c.ok]
    assert failed == [], failed
    assert outcome.claims, "a demo that checks nothing"
    assert any("building the lab" in line for line in said)
    return outcome


def pictures_ok(outcome: Outcome) -> None:
    """The files are there, the SVG's text never overlaps or leaves the canvas, the PNG is an
    image, and the ladder's times run down."""
    files = outcome.files
    assert files["capture"].stat().st_size > 24
    svg = files["ladder (SVG)"].read_text()
    width, height, boxes = text_boxes(svg)
    assert overlapping(boxes) == []
    assert all(0 <= b.x0 and b.x1 <= width and 0 <= b.y0 and b.y1 <= height for b in boxes)
    assert files["ladder (PNG)"].read_bytes()[:4] == b"\x89PNG"
    times = [r.time for r in outcome.ladder.rows if isinstance(r, (Arrow, Event))]
    assert times == sorted(times)
    lines = [json.loads(x) for x in files["steps (JSON lines)"].read_text().splitlines()]
    assert lines[0]["type"] == "demo" and lines[-1]["type"] == "result"
    assert lines[-1]["ok"] is True


def test_handshake_token_and_idsn_are_the_kernels(tmp_path: Path) -> None:
    out = demo("handshake", tmp_path)
    f = out.facts
    assert f["client_token"] == f["kernel_client_token"]
    assert f["server_token"] == f["kernel_server_token"]
    conn = out.tracker.connections[0]
    assert (conn.keys[CLIENT], conn.keys[SERVER]) == (f["client_key"], f["server_key"])
    first = out.ladder.arrows[0]
    assert first.sender == CLIENT and first.ann.seg.tcp_flags == "S"
    assert first.note is not None and first.note.rfc == "3.1"
    shown = "\n".join(line for ex in out.explanations for line in ex.lines)
    assert f"{f['client_token']:#010x}" in shown and f"{f['server_idsn']:#018x}" in shown
    pictures_ok(out)


def test_join_hmacs_check_and_the_joined_subflow_carries_data(tmp_path: Path) -> None:
    out = demo("join", tmp_path, size=300_000)
    f = out.facts
    assert f["synack_hmac_ok"] and f["ack_hmac_ok"]
    assert f["token"] == f["server_token"] == f["kernel_server_token"]
    assert f["joined_bytes_to_server"] > 0 and f["joined_bytes_to_client"] > 0
    assert out.tracker.hmacs.as_tuple() == (2, 0, 0)
    joins = [a for a in out.ladder.arrows
             if any(o["subtype"] == "MP_JOIN" for o in a.ann.seg.options)]
    assert [a.sender for a in joins] == [CLIENT, SERVER, CLIENT]
    pictures_ok(out)


def test_add_addr_hmac_echo_and_join(tmp_path: Path) -> None:
    out = demo("add-addr", tmp_path, size=200_000)
    f = out.facts
    assert f["hmac_ok"] and f["hmac"] == f["hmac_recomputed"]
    assert f["addr"] == "10.0.2.2"
    notes = [a.note.rfc for a in out.ladder.arrows
             if a.note and any(o["subtype"] == "ADD_ADDR" for o in a.ann.seg.options)]
    assert notes == ["3.4.1", "3.4.1"]       # the announcement, then its echo
    pictures_ok(out)


@needs_nft
def test_fallback_after_the_configured_number_of_syns(tmp_path: Path) -> None:
    out = demo("fallback", tmp_path, retries=1)
    f = out.facts
    assert (f["mp_capable_syns"], f["plain_syns"], f["dropped_by_router"]) == (2, 1, 2)
    assert f["client_fallback"] and f["server_fallback"]
    assert f["syn_times"][1] > 0.5                   # the SYN timer, not a burst
    dropped = [a for a in out.ladder.arrows if a.dropped]
    assert len(dropped) == 2 and all(a.ann.seg.tcp_flags == "S" for a in dropped)
    assert out.tracker.connections[0].fell_back()
    pictures_ok(out)


@needs_nft
def test_checksum_failure_mp_fail_and_what_followed(tmp_path: Path) -> None:
    out = demo("checksum", tmp_path, watch=0.5)
    f = out.facts
    assert (f["router_rewrites"], f["checksums_invalid"], f["server_data_csum_err"]) == (1, 1, 1)
    assert f["mp_fail_from_server"] >= 1
    # what the demo says happened next is what the capture shows (this kernel does not do the
    # same thing every run: the transfer stalls, or goes on in checksummed mappings)
    segments = list(decode_file(str(out.files["capture"]), mptcp_only=False))
    (fail,) = [s for s in segments if s.src == "10.0.2.1" and has(s, "MP_FAIL")]
    after = sum(s.payload_len for s in segments if s.frame > fail.frame and s.dst == "10.0.2.1")
    infinite = sum(1 for s in segments for o in s.options
                   if o["subtype"] == "DSS" and o.get("data_level_len") == 0 and "dsn" in o)
    assert (f["bytes_after_mp_fail"], f["infinite_mappings_on_wire"]) == (after, infinite)
    said = "\n".join(out.explanations[-1].lines)
    assert f"{infinite} infinite mapping" in said and f"read {f['read']:,} of" in said
    if after:
        assert f"{after:,} bytes of data followed" in said
    elif f["bytes_before_mp_fail"] >= f["size"]:
        assert "every byte had left the client before the MP_FAIL" in said
    else:
        assert "stalled" in said and f["read"] < f["size"]
    changed = [a for a in out.ladder.arrows if a.network and a.network.startswith("changed")]
    assert len(changed) == 1 and "received as 0xff" in changed[0].network
    pictures_ok(out)


@needs_nft
def test_backup_carries_nothing_until_wifi_fails(tmp_path: Path) -> None:
    out = demo("backup", tmp_path, before=1.0, outage=1.5, after=3.0)
    f = out.facts
    assert f["cell_new_before"] == 0 and f["wifi_before"] > 0
    assert f["mp_prio"] == [False, True]
    assert f["cell_outage"] > 0 and f["wifi_after"] > f["cell_after"]
    events = [r.text for r in out.ladder.rows if isinstance(r, Event)]
    assert events[0].startswith("WiFi fails") and "WiFi is back" in events
    assert out.files["throughput plot (PNG)"].read_bytes()[:4] == b"\x89PNG"
    pictures_ok(out)


def test_aggregate_uses_both_paths_beyond_either(tmp_path: Path) -> None:
    out = demo("aggregate", tmp_path, seconds=4.0)     # 3 s of steady state after the join
    f = out.facts
    assert set(f["subflow_bytes"]) == {"1", "2"}
    assert f["goodput_mbit"] > max(f["rate1_mbit"], f["rate2_mbit"])
    series = out.series["throughput"]
    assert len(series.subflows) == 2 and series.by_acks
    svg = out.files["throughput plot (SVG)"].read_text()
    assert "path 1: 20 Mbit/s" in svg and "sum: 30 Mbit/s" in svg
    pictures_ok(out)


def test_every_demo_has_a_test() -> None:
    tested = {name.split("_")[1] for name in globals() if name.startswith("test_")}
    names = {n.replace("-", "_").split("_")[0] for n, e in entries().items() if not e.sequence}
    assert names <= tested | {"add"}, names - tested


# -- the command -----------------------------------------------------------------------------

def cli(*args: str, stdin: str | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def test_demo_json_is_the_steps_claims_and_files(tmp_path: Path) -> None:
    res = cli("demo", "handshake", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    kinds = [o["type"] for o in objs]
    assert kinds[0] == "demo" and kinds[-1] == "result" and "summary" in kinds
    steps = [o for o in objs if o["type"] == "step"]
    assert steps[0]["options"][0]["subtype"] == "MP_CAPABLE" and steps[0]["rfc"] == "3.1"
    for key in ("frame", "time", "src", "sport", "dst", "dport", "tcp_flags", "seq", "ack",
                "payload_len", "connection", "subflow", "options", "note", "from"):
        assert key in steps[0]
    facts = next(o for o in objs if o["type"] == "facts")
    assert facts["client_token"] == facts["kernel_client_token"]
    summary = next(o for o in objs if o["type"] == "summary")
    assert summary["connections"][0]["client_token"] == facts["client_token"]
    assert all(o["ok"] for o in objs if o["type"] == "claim")
    assert "building the lab" in res.stderr               # progress goes to stderr
    assert (tmp_path / "steps.jsonl").read_text().splitlines() == res.stdout.splitlines()


def test_demo_step_by_step_waits_for_enter(tmp_path: Path) -> None:
    res = cli("demo", "handshake", "-o", str(tmp_path), "--step", "--color", "never",
              stdin="\n\n\nq\n")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.count("[Enter] next step") == 4             # three steps, then q: the rest
    first_prompt = out.index("[Enter] next step")
    assert "MP_CAPABLE v1 SYN" in out[first_prompt:]         # nothing drawn before Enter
    assert "Checked:" in out and "Files in" in out and "\033[" not in out


def test_demo_listing_and_bad_names(tmp_path: Path) -> None:
    res = cli("demo")
    assert res.returncode == 0
    for name in entries():
        assert name in res.stdout
    res = cli("demo", "handshak")
    assert res.returncode == 3 and "did you mean handshake" in res.stderr
    res = cli("demo", "handshake", "--set", "upload=0", "-o", str(tmp_path / "x"))
    assert res.returncode == 3 and res.stderr.count("\n") == 1
    res = cli("demo", "handshake", "--set", "nope=1")
    assert res.returncode == 3 and res.stderr == ("mptcplab: error: handshake has no option "
                                                  "'nope' (options: upload (int), download (int))\n")
    res = cli("demo", "aggregate", "--set", "seconds=soon")     # typed as the topologies' --set
    assert res.returncode == 3 and "seconds=soon: seconds takes a number" in res.stderr


def test_a_demo_without_root_says_why_in_one_line() -> None:
    res = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable,
                          "-m", "mptcplab.cli", "demo", "fallback"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ))
    assert res.returncode == 4, res.stderr
    assert res.stderr.count("\n") == 1 and "needs root" in res.stderr


def test_ctrl_c_in_a_demo_removes_its_lab(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "demo", "backup", "-o",
                             str(tmp_path), "--set", "before=30"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_line(proc, "  · the client's cellular endpoint", timeout=60)
    ids = lab_ids_of_pid(proc.pid)
    assert len(ids) == 1 and len(namespaces_of(ids)) == 3
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "mptcplab: interrupted"
    assert namespaces_of(ids) == []
