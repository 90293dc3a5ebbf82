"""Ladders and plots of captures (`mptcplab ladder`, `mptcplab plot`), held to the sniffer, to
the capture facts computed another way, and to what a reader would see: every segment
accounted for, arrows from the sender, time running down, no text on top of text."""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from capture_paths import OWN
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcplab.analysis import CLIENT, SERVER, DataLevel, Spans, Tracker
from mptcplab.decode import Segment, decode_file
from mptcplab.facts import data_ranges
from mptcplab.report.demo import footer_lines
from mptcplab.report.ladder import Arrow, Event, Gap, build_ladder, ladder_text
from mptcplab.report.svg import (
    Box,
    ladder_svg,
    overlapping,
    png_scale,
    svg_to_png,
    text_boxes,
)

SVG_NS = "{http://www.w3.org/2000/svg}"


def track(path: Path) -> tuple[list[Any], Tracker, list[Segment]]:
    tracker = Tracker()
    segments = list(decode_file(str(path), mptcp_only=False))
    annotated = [a for a in (tracker.feed(s) for s in segments) if a is not None]
    tracker.finish()
    return annotated, tracker, segments


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", *args], capture_output=True,
                          text=True, timeout=120, input=stdin)


# -- the ladder model ------------------------------------------------------------------------

@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
@pytest.mark.parametrize("every", [False, True], ids=["folded", "every"])
def test_every_segment_of_the_connection_is_drawn_or_counted_once(path: Path,
                                                                  every: bool) -> None:
    annotated, _, _ = track(path)
    ladder = build_ladder(annotated, connection=1, every=every)
    frames = [r.ann.seg.frame for r in ladder.arrows]
    folded = [a.seg.frame for r in ladder.rows if isinstance(r, Gap) for a in r.anns]
    mine = [a.seg.frame for a in annotated if a.connection == 1]
    assert sorted(frames + folded) == mine
    assert frames == sorted(frames)
    if every:
        assert folded == []
    times = [r.time for r in ladder.rows if isinstance(r, (Arrow, Event))]
    assert times == sorted(times) and times[0] == 0.0


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_arrows_go_from_the_host_that_sent_the_segment(path: Path) -> None:
    annotated, _, segments = track(path)
    # the client is whoever sent SYNs without ACK (in these captures, one host opens all)
    clients = {s.src for s in segments if s.tcp_flags == "S"}
    ladder = build_ladder(annotated, connection=1, every=True)
    for arrow in ladder.arrows:
        assert (arrow.sender == CLIENT) == (arrow.ann.seg.src in clients), arrow.head
    assert set(ladder.client[1:]) == clients


SECTIONS = {"MP_CAPABLE": "3.1", "MP_JOIN": "3.2", "ADD_ADDR": "3.4.1", "REMOVE_ADDR": "3.4.2",
            "MP_PRIO": "3.3.8", "MP_FAIL": "3.7", "MP_FASTCLOSE": "3.5", "MP_TCPRST": "3.6"}


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_each_signal_is_explained_with_its_rfc_section(path: Path) -> None:
    annotated, _, _ = track(path)
    seen = set()
    for arrow in build_ladder(annotated, connection=1).arrows:
        seg = arrow.ann.seg
        kinds = [o["subtype"] for o in seg.options if o["subtype"] in SECTIONS]
        if "R" in seg.tcp_flags or not kinds or arrow.note is None:
            continue
        assert arrow.note.rfc == SECTIONS[kinds[0]], (arrow.head, arrow.note)
        seen.add(kinds[0])
    assert {"MP_CAPABLE", "MP_JOIN"} <= seen or path.name == "kernel-v1-csum.pcap"
    syn = build_ladder(annotated, connection=1).arrows[0]
    assert syn.note is not None and "offers MPTCP" in syn.note.text


def test_events_and_network_marks_land_on_their_rows() -> None:
    annotated, _, _ = track(OWN[0])
    t0 = annotated[0].seg.time
    third = annotated[2].seg.frame
    ladder = build_ladder(annotated, connection=1, events=[(t0 + 1e-6, "something happens")],
                          network={third: "dropped in the network"})
    assert isinstance(ladder.rows[1], Event) and ladder.rows[1].text == "something happens"
    dropped = [a for a in ladder.arrows if a.dropped]
    assert [a.ann.seg.frame for a in dropped] == [third]


# -- the terminal ----------------------------------------------------------------------------

@pytest.mark.parametrize("width", [60, 100, 140])
def test_terminal_ladder_fits_its_width_plain_or_ascii(width: int) -> None:
    annotated, tracker, _ = track(OWN[1])
    t0 = annotated[0].seg.time
    ladder = build_ladder(annotated, connection=1, title="a long title for a narrow ladder " * 3,
                          events=[(t0 + 0.001, "the connection manager makes cellular regular "
                                               "(endpoint id 2 nobackup) " * 2)])
    ladder.footer = footer_lines(tracker, OWN[1].name)
    plain = ladder_text(ladder, width=width)
    assert "nobackup" in plain and any("ladder" in line for line in plain.splitlines()[:3])
    assert "\033[" not in plain
    assert max(len(line) for line in plain.splitlines()) <= width
    ascii_only = ladder_text(ladder, width=width, unicode=False)
    assert ascii_only.isascii()
    coloured = ladder_text(ladder, width=width, colour=True)
    assert "\033[" in coloured
    assert re.sub(r"\033\[[0-9;]*m", "", coloured) == plain
    # the client's SYN arrow points right, the server's SYN-ACK left
    arrows = [line for line in plain.splitlines() if "▶" in line or "◀" in line]
    assert arrows[0].rstrip().endswith("▶│") and "◀" in arrows[1]


# -- SVG and PNG -----------------------------------------------------------------------------

def boxes_ok(svg: str) -> None:
    width, height, boxes = text_boxes(svg)
    assert boxes
    assert overlapping(boxes) == []
    outside = [b for b in boxes if b.x0 < 0 or b.y0 < 0 or b.x1 > width or b.y1 > height]
    assert outside == []


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
@pytest.mark.parametrize("every", [False, True], ids=["folded", "every"])
def test_svg_text_never_overlaps_and_stays_on_the_canvas(path: Path, every: bool) -> None:
    annotated, _, _ = track(path)
    ladder = build_ladder(annotated, connection=1, every=every, title=f"{path.name} " * 8,
                          events=[(annotated[5].seg.time, "an event with a long text " * 6)],
                          network={annotated[0].seg.frame: "dropped in the network"})
    ladder.footer = ["a footer line"]
    boxes_ok(ladder_svg(ladder))


def test_the_overlap_check_finds_overlapping_and_escaping_text() -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
           '<text x="10" y="20" font-size="12" text-anchor="start">hello world</text>'
           '<text x="40" y="25" font-size="12" text-anchor="start">overlaps</text>'
           '<text x="190" y="90" font-size="12" text-anchor="middle">runs off</text></svg>')
    width, _, boxes = text_boxes(svg)
    pairs = overlapping(boxes)
    assert [(a.text, b.text) for a, b in pairs] == [("hello world", "overlaps")]
    assert [b.text for b in boxes if b.x1 > width] == ["runs off"]
    assert not Box(0, 0, 10, 10, "a").overlaps(Box(10, 0, 20, 10, "b"))


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_svg_arrows_point_from_sender_to_receiver_and_time_runs_down(path: Path) -> None:
    annotated, _, _ = track(path)
    ladder = build_ladder(annotated, connection=1, every=True)
    root = ET.fromstring(ladder_svg(ladder))
    steps = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "step"]
    assert len(steps) == len(ladder.arrows)
    lifelines = sorted({float(ln.get("x1")) for ln in root.iter(f"{SVG_NS}line")
                        if ln.get("class") == "lifeline"})
    client_x, server_x = lifelines[0], lifelines[-1]
    last_y, last_t = -1.0, -1.0
    for g, arrow in zip(steps, ladder.arrows):
        shaft = g.find(f"{SVG_NS}line")
        head = g.find(f"{SVG_NS}polygon")
        tip_x = float(head.get("points").split()[0].split(",")[0])
        start_x, y = float(shaft.get("x1")), float(shaft.get("y1"))
        if g.get("data-from") == "client":
            assert start_x == client_x and tip_x > server_x - 3, arrow.head
        else:
            assert start_x == server_x and tip_x < client_x + 3, arrow.head
        assert g.get("data-from") == ("client" if arrow.sender == CLIENT else "server")
        t = float(g.get("data-time"))
        assert y > last_y and t >= last_t
        last_y, last_t = y, t


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_png_is_the_svg_enlarged_up_to_a_pixel_budget(tmp_path: Path) -> None:
    annotated, _, _ = track(OWN[0])
    short = ladder_svg(build_ladder(annotated[:6], connection=1))
    width, height, _ = text_boxes(short)
    assert png_scale(width, height) == 2.0
    svg_to_png(short, tmp_path / "short.png")
    assert png_size(tmp_path / "short.png") == (int(width) * 2, int(height) * 2)
    tall = ladder_svg(build_ladder(annotated, connection=1, every=True))
    width, height, _ = text_boxes(tall)
    scale = png_scale(width, height)
    assert 1.0 <= scale < 2.0
    svg_to_png(tall, tmp_path / "tall.png")
    w, h = png_size(tmp_path / "tall.png")
    assert abs(w - width * scale) <= 1 and abs(h - height * scale) <= 1
    assert w * h <= 6_000_000 * 1.01


# -- `mptcplab ladder` -------------------------------------------------------------------------

ADDED = {"type", "step", "since_start", "from", "note", "rfc", "network"}


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_ladder_json_steps_are_the_sniffers_packet_objects(path: Path) -> None:
    res = run("ladder", "-r", str(path), "--all", "--json")
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    steps = [o for o in objs if o["type"] == "step"]
    assert objs[-1]["type"] == "summary"
    sniff = run("sniff", "-r", str(path), "--json")
    packets = {o["frame"]: o for o in map(json.loads, sniff.stdout.splitlines())
               if o["type"] == "packet"}
    for step in steps:
        mine = {k: v for k, v in step.items() if k not in ADDED}
        if step["frame"] in packets:       # the sniffer prints segments with MPTCP options
            theirs = {k: v for k, v in packets[step["frame"]].items() if k != "type"}
            assert mine == theirs
        else:
            assert mine["options"] == []
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["from"] == "client" and steps[0]["rfc"] == "3.1"


def test_ladder_command_prints_writes_svg_and_png(tmp_path: Path) -> None:
    res = run("ladder", "-r", str(OWN[1]), "--color", "never", "--width", "90")
    assert res.returncode == 0, res.stderr
    assert "MP_JOIN SYN" in res.stdout and "RFC 8684 §3.2" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 90
    for name in ("l.svg", "l.png"):
        res = run("ladder", "-r", str(OWN[1]), "-o", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        assert f"wrote {tmp_path / name}" in res.stdout
    boxes_ok((tmp_path / "l.svg").read_text())
    assert png_size(tmp_path / "l.png")[0] > 1000
    short = run("ladder", "-r", str(OWN[1]), "-c", "3", "--json")
    assert [json.loads(x)["frame"] for x in short.stdout.splitlines()[:-1]] == [1, 2, 3]


def one_error(res: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("mptcplab: error: ")
    assert words in res.stderr


def empty_pcap(path: Path) -> Path:
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


def test_ladder_and_plot_errors_are_one_line(tmp_path: Path) -> None:
    one_error(run("ladder", "-r", str(tmp_path / "nope.pcap")), 3, "nope.pcap")
    one_error(run("ladder", "-r", str(OWN[0]), "--conn", "7"), 3, "no MPTCP connection 7")
    one_error(run("ladder", "-r", str(OWN[0]), "-o", str(tmp_path / "x.txt")), 2, ".svg or a .png")
    one_error(run("ladder", "-r", str(empty_pcap(tmp_path / "e.pcap"))), 3, "no MPTCP connection")
    one_error(run("plot", "-r", str(OWN[0]), "-o", str(tmp_path / "x.pdf")), 2, ".svg or a .png")
    one_error(run("plot", "-r", str(tmp_path / "e.pcap"), "-o", str(tmp_path / "p.svg")), 3,
              "no MPTCP connection")
    one_error(run("plot", "-r", str(OWN[0]), "-o", str(tmp_path / "p.svg"), "--conn", "4"), 3,
              "connection 4")
    res = run("plot", "-r", str(OWN[0]), "-o", str(tmp_path / "p.svg"), "--bin", "0")
    assert res.returncode == 2 and "--bin" in res.stderr
    assert not (tmp_path / "p.svg").exists()


# -- plots and the data level ------------------------------------------------------------------

@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_placed_data_ranges_are_the_capture_facts_ranges(path: Path) -> None:
    """DataLevel (tracker-based) and facts.data_ranges (its own reassembly) agree on which
    data-level bytes travelled to and from each address."""
    annotated, _, segments = track(path)
    level = DataLevel()
    spans: dict[str, list[tuple[int, int]]] = {}
    for ann in annotated:
        placed = level.place(ann)
        if placed is None or placed.dsn is None:
            continue
        conn = ann.half.subflow.conn
        start = (conn.idsns[placed.side] + placed.dsn) % 2**64
        for addr in (ann.seg.src, ann.seg.dst):
            spans.setdefault(addr, []).append((start, start + placed.length))
    assert spans
    for addr, ranges in spans.items():
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        assert merged == data_ranges(segments, addr=addr), addr


def test_plot_command_counts_what_the_tracker_counts(tmp_path: Path) -> None:
    path = OWN[1]
    _, tracker, _ = track(path)
    res = run("plot", "-r", str(path), "-o", str(tmp_path / "p.svg"), "--json",
              "--rate", "path=100")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    conn = tracker.connections[0]
    side = CLIENT if summary["direction"] == "client → server" else SERVER
    carried = {s.number: s.half_of(side).bytes for s in conn.subflows if s.half_of(side).bytes}
    assert {s["subflow"]: s["bytes"] for s in summary["subflows"]} == carried
    assert all(s["retransmissions"] == 0 and s["reinjections"] == 0
               for s in summary["subflows"])
    ET.fromstring((tmp_path / "p.svg").read_text())
    res = run("plot", "-r", str(path), "-o", str(tmp_path / "p.png"), "--from", "client")
    assert res.returncode == 0, res.stderr
    assert "client → server" in res.stdout and png_size(tmp_path / "p.png")[0] > 800
    # these kernel captures are uploads: nothing to plot the other way
    one_error(run("plot", "-r", str(path), "-o", str(tmp_path / "q.png"), "--from", "server"),
              3, "no connection in the capture carried data from the server")


def _seg(frame: int, t: float, src: str, sport: int, dst: str, dport: int, flags: str,
         seq: int, ack: int, length: int = 0, options: list[dict[str, Any]] | None = None
         ) -> Segment:
    return Segment(frame, t, src, sport, dst, dport, flags, seq, ack, length, options or [],
                   b"x" * length)


def _dss(dsn: int, ssn: int, length: int) -> dict[str, Any]:
    return {"subtype": "DSS", "length": 20, "flags": "AaMm", "data_ack": 1, "data_ack_len": 8,
            "dsn": dsn, "dsn_len": 8, "ssn": ssn, "data_level_len": length, "data_fin": False}


def test_retransmissions_and_reinjections_are_told_apart() -> None:
    """Two subflows; subflow 1 sends bytes 1-1000 twice (a retransmission), subflow 2 then
    sends bytes 501-1000 again (a reinjection) and 1001-1500 (new)."""
    from mptcplab import crypto

    ck, sk = 0x1111, 0x2222
    cidsn = crypto.key_idsn(ck)
    token = crypto.key_token(sk)
    a, b, c = "10.0.1.1", "10.0.1.2", "10.0.2.1"
    cap = {"subtype": "MP_CAPABLE", "version": 1, "flags": "H"}
    segs = [
        _seg(1, 0.0, a, 1000, b, 80, "S", 100, 0, 0, [dict(cap, length=4)]),
        _seg(2, 0.1, b, 80, a, 1000, "SA", 500, 101, 0, [dict(cap, length=12, sender_key=sk)]),
        _seg(3, 0.2, a, 1000, b, 80, "A", 101, 501, 0,
             [dict(cap, length=20, sender_key=ck, receiver_key=sk)]),
        _seg(4, 0.3, c, 2000, b, 80, "S", 7000, 0, 0,
             [{"subtype": "MP_JOIN", "length": 12, "backup": False, "addr_id": 1,
               "token": token, "nonce": 1}]),
        _seg(5, 0.4, b, 80, c, 2000, "SA", 9000, 7001, 0,
             [{"subtype": "MP_JOIN", "length": 16, "backup": False, "addr_id": 0,
               "truncated_hmac": 0, "nonce": 2}]),
        _seg(6, 0.5, a, 1000, b, 80, "A", 101, 501, 1000, [_dss(cidsn + 1, 1, 1000)]),
        _seg(7, 0.6, a, 1000, b, 80, "A", 101, 501, 1000, [_dss(cidsn + 1, 1, 1000)]),
        _seg(8, 0.7, c, 2000, b, 80, "A", 7001, 9001, 500, [_dss(cidsn + 501, 1, 500)]),
        _seg(9, 0.8, c, 2000, b, 80, "A", 7501, 9001, 500, [_dss(cidsn + 1001, 501, 500)]),
    ]
    tracker, level = Tracker(), DataLevel()
    placed = [level.place(a) for a in (tracker.feed(s) for s in segs) if a is not None]
    got = [(p.subflow, p.dsn, p.length, p.retransmission, p.reinjection)
           for p in placed if p is not None]
    assert got == [(1, 1, 1000, False, False), (1, 1, 1000, True, False),
                   (2, 501, 500, False, True), (2, 1001, 500, False, False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=40),
       st.tuples(st.integers(0, 340), st.integers(1, 40)))
def test_spans_merge_like_a_set_of_bytes(adds: list[tuple[int, int]],
                                          probe: tuple[int, int]) -> None:
    spans, covered = Spans(), set()
    for lo, n in adds:
        spans.add(lo, lo + n)
        covered |= set(range(lo, lo + n))
        assert all(a < b for a, b in zip(spans.starts, spans.starts[1:]))
        assert all(e < s for e, s in zip(spans.ends, spans.starts[1:]))
    assert set().union(*(range(a, b) for a, b in zip(spans.starts, spans.ends))) == covered
    lo, n = probe
    assert spans.overlaps(lo, lo + n) == bool(covered & set(range(lo, lo + n)))


def test_random_order_spans() -> None:
    rng = random.Random(7)
    spans, covered = Spans(), set()
    for _ in range(2000):
        lo = rng.randrange(100000)
        hi = lo + rng.randrange(1, 1500)
        spans.add(lo, hi)
        covered.update(range(lo, hi))
    assert sum(b - a for a, b in zip(spans.starts, spans.ends)) == len(covered)


def test_plot_event_labels_neither_overlap_nor_leave_the_panel():
    """Crowded, long event texts (the backup demo's) on a plot: every label drawn, each box
    clear of the others and inside the panel, as measured on the laid-out figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mptcplab.report.plot import _events

    fig = Figure(figsize=(13, 7.5), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.set_xlim(0, 8)
    top.legend(handles=top.plot([0, 8], [0, 1], label="a wide legend " * 4),
               loc="upper left", bbox_to_anchor=(1.01, 1.0))
    events = [(1.5, "WiFi fails: the router drops everything on the WiFi link"),
              (1.55, "the connection manager makes cellular regular (endpoint id 2 nobackup)"),
              (3.0, "WiFi is back"),
              (3.02, "the connection manager makes cellular a backup again"),
              (7.9, "the upload stops; the server read 12,345,678 bytes")]
    _events(fig, top, bottom, events)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    panel = top.get_window_extent(renderer)
    boxes = [a.get_window_extent(renderer) for a in top.texts]
    assert sorted(a.get_text() for a in top.texts) == sorted(text for _, text in events)
    for i, box in enumerate(boxes):
        assert panel.x0 - 1 <= box.x0 and box.x1 <= panel.x1 + 1, top.texts[i].get_text()
        for other in boxes[i + 1:]:
            assert not box.overlaps(other), (top.texts[i].get_text(), other)
