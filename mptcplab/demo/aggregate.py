"""Aggregation: two rate-limited paths carry one connection faster than either alone.

Client and server are linked by two paths of different rates (token bucket filters on the
links). The server announces its second address, the client joins it, and one upload runs for
a while. The kernel's scheduler spreads the data over both subflows; the lab measures from the
capture what each subflow carried every fraction of a second, and from the server's
application how fast the connection delivered, against each link's rate and their sum.
"""

from __future__ import annotations

import time

from mptcplab.analysis import CLIENT
from mptcplab.demo import HEADERS, Scene, diagram_of
from mptcplab.errors import BadInput
from mptcplab.topo import catalogue
from mptcplab.topo.model import parse_rate
from mptcplab.traffic import connect, pattern

TOPOLOGY = "two-paths"
SECONDS = 18
ORDER = 70
SERVER_ADDR = "10.0.1.2"
WARMUP = 1.0            # seconds after the join left out of the steady state (slow starts)
STEADY = 1.0            # the steady state lasts at least this long, however late the join


def run(scene: Scene, *, rate1: str = "20mbit", rate2: str = "10mbit",
        seconds: float = 8.0) -> None:
    if not 2 <= seconds <= 120:
        raise BadInput("aggregate: seconds must be 2..120")
    r1, r2 = parse_rate(rate1), parse_rate(rate2)
    assert r1 is not None and r2 is not None
    if max(r1, r2) > 1_000_000_000:
        raise BadInput("aggregate: rates up to 1gbit (the capture must keep up)")
    topo = catalogue.get(TOPOLOGY)
    topo.links[0].rate, topo.links[1].rate = r1, r2
    server_node = topo.nodes["server"]
    server_node.endpoints = [ep for ep in server_node.endpoints if ep.addr.version == 4]
    scene.network_label = ["network", f"path 1 {r1 / 1e6:g} Mbit/s",
                          f"path 2 {r2 / 1e6:g} Mbit/s"]
    block = pattern(1 << 16)
    diagram = diagram_of(topo)
    for rate in (r1, r2):       # the catalogue's diagram shows its default rate
        diagram = "\n".join(diagram).replace("─ 100 Mbit/s ─", f"─ {rate / 1e6:g} Mbit/s ─", 1) \
            .splitlines()
    with scene.lab(topo, diagram) as lab:
        client, server = lab["client"], lab["server"]
        scene.capture(client, "any", snaplen=HEADERS, buffer_kib=65536)
        before = server.counters()
        scene.progress(f"one upload for {seconds:g} s over both paths (the server announces "
                       "10.0.2.2, the client joins it)")
        with connect(client, server, SERVER_ADDR, timeout=30) as conn:
            with conn.stream(block) as upload:
                started = time.time()
                scene.wait_counter(server, before, "MPTcpExtMPJoinAckRx")
                # the steady state starts WARMUP after the join, not after the start: on a
                # busy machine the join can come late, and path 2 is still in slow start then
                joined = time.time()
                end = max(started + seconds, joined + WARMUP + STEADY)
                time.sleep(max(0.0, end - time.time()))
                upload.stop()
            progress = upload.progress
            finished = progress[-1][0] if progress else time.time()
        view = scene.analyse()

    total = progress[-1][1] if progress else 0
    link_sum = (r1 + r2) / 1e6
    window = (joined + WARMUP, end)
    steady = (f"over {window[0] - started:.1f}–{window[1] - started:.1f} s, from {WARMUP:g} s "
              "after the join")
    sent: dict[int, int] = {}
    for ann in view.annotated:
        seg = ann.seg
        if ann.half is not None and ann.half.side == CLIENT and ann.subflow is not None \
                and window[0] <= seg.time <= window[1]:
            sent[ann.subflow] = sent.get(ann.subflow, 0) + seg.payload_len
    span = window[1] - window[0]
    subflow_rates = {n: v * 8 / span / 1e6 for n, v in sorted(sent.items())}
    from mptcplab.report.plot import series

    s = series(view.annotated, connection=1, side=CLIENT)
    acked = [(s.t0 + t, a) for t, a in s.acks if window[0] <= s.t0 + t <= window[1]]
    goodput = 0.0
    if len(acked) >= 2:
        (t0, a0), (t1, a1) = acked[0], acked[-1]
        goodput = (a1 - a0) * 8 / max(t1 - t0, 1e-6) / 1e6
    app = total * 8 / max(finished - started, 1e-6) / 1e6
    shares = {n: sub.bytes for n, sub in s.subflows.items()}
    carried = sum(shares.values()) or 1
    scene.claim("both subflows carried a real share of the data",
                len(shares) == 2 and all(v > carried / 10 for v in shares.values()),
                ", ".join(f"s{n} {v:,} bytes ({100 * v / carried:.0f}%)"
                          for n, v in shares.items()))
    faster = max(r1, r2) / 1e6
    scene.claim("the connection delivered more than the faster path alone could carry",
                goodput > faster,
                f"{goodput:.1f} Mbit/s acknowledged at the data level {steady}; "
                f"the faster path is {faster:g} Mbit/s")
    lines = [f"{'':<34}{'Mbit/s':>8}{'of the link rate':>18}"]
    for (number, rate), link in zip(sorted(subflow_rates.items()), (r1, r2)):
        lines.append(f"{f's{number} (path {number})':<34}{rate:>8.1f}"
                     f"{100 * rate * 1e6 / link:>17.1f}%")
    lines.append(f"{'the connection (DATA_ACKs)':<34}{goodput:>8.1f}"
                 f"{100 * goodput / link_sum:>17.1f}%  of the sum, {link_sum:g} Mbit/s")
    lines.append(f"({steady}: payload the client sent on each path, "
                 "retransmissions included,")
    lines.append(" and the data the server acknowledged; the links' rates count whole "
                 "frames, of which")
    lines.append(" headers and MPTCP options take about 6% at MTU 1500)")
    lines.append(f"the server's application read {total:,} bytes in {finished - started:.1f} s "
                 f"({app:.1f} Mbit/s, slow start included)")
    scene.explain("What each path and the connection carried (RFC 8684 §3.3.5, §3.3.7):",
                  *lines)
    scene.fact(rate1_mbit=r1 / 1e6, rate2_mbit=r2 / 1e6, seconds=seconds, server_read=total,
               goodput_mbit=round(goodput, 3), application_mbit=round(app, 3),
               subflow_mbit={str(k): round(v, 3) for k, v in subflow_rates.items()},
               subflow_bytes={str(k): v for k, v in shares.items()})
    scene.plot("throughput", side=CLIENT,
               title=f"aggregate demo: one upload over two paths ({r1 / 1e6:g} + "
                     f"{r2 / 1e6:g} Mbit/s)",
               rates=[("path 1", r1 / 1e6), ("path 2", r2 / 1e6), ("sum", link_sum)])
