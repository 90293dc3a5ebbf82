"""Backup subflows and MP_PRIO: cellular stands by until WiFi fails, then carries the data.

A phone uploads over WiFi and cellular. Its cellular endpoint is a backup: the MP_JOIN from
there has B=1 and the server sends nothing new on it while WiFi works. Then WiFi fails (the
lab drops everything on the WiFi link). The phone's connection manager, played here by the
demo through the in-kernel path manager (`ip mptcp endpoint change ... nobackup`), makes
cellular a regular path: the kernel sends MP_PRIO B=0 and the data moves to cellular. When
WiFi returns, cellular goes back to backup (MP_PRIO B=1) and the data returns to WiFi once the
WiFi subflow recovers. The plot shows each subflow's share over time.
"""

from __future__ import annotations

import time

from mptcplab.analysis import CLIENT
from mptcplab.demo import HEADERS, Scene, diagram_of
from mptcplab.errors import BadInput, LabError
from mptcplab.facts import bytes_outside, data_ranges, payload_bytes
from mptcplab.topo import catalogue
from mptcplab.traffic import connect, pattern

TOPOLOGY = "wifi-cellular"
NEEDS = ("nft",)
SECONDS = 18
ORDER = 60
SERVER_ADDR = "10.0.3.1"
WIFI, CELL = "10.0.1.1", "10.0.2.1"
WIFI_DOWN = """table inet mptcplab_demo_wifi {
\tchain down {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tiifname "eth0" counter drop
\t\toifname "eth0" counter drop
\t}
}
"""


def run(scene: Scene, *, before: float = 1.5, outage: float = 1.5, after: float = 3.0,
        wifi_rate: str = "20mbit", cell_rate: str = "10mbit") -> None:
    for name, value in (("before", before), ("outage", outage), ("after", after)):
        if not 0.5 <= value <= 30:
            raise BadInput(f"backup: {name} must be 0.5..30 seconds")
    topo = catalogue.get(TOPOLOGY, backup=True, wifi_rate=wifi_rate, cell_rate=cell_rate)
    scene.network_label = ["network", "router (WiFi, cellular)"]
    block = pattern(1 << 16)
    marks: dict[str, float] = {}
    diagram = "\n".join(diagram_of(topo)) \
        .replace("WiFi 50 Mbit/s", f"WiFi {_mbit(wifi_rate):g} Mbit/s") \
        .replace("cellular 10 Mbit/s", f"cellular {_mbit(cell_rate):g} Mbit/s").splitlines()
    with scene.lab(topo, diagram) as lab:
        client, server, router = lab["client"], lab["server"], lab["router"]
        scene.capture(client, "any", snaplen=HEADERS, buffer_kib=32768)
        counters = {n: lab[n].counters() for n in ("client", "server")}
        (cell_ep,) = [e for e in client.pm.endpoint("show") if e["addr"] == CELL]
        scene.progress(f"the client's cellular endpoint {CELL} is a backup "
                       f"({' '.join(cell_ep['flags'])}); the client uploads without pause")
        with connect(client, server, SERVER_ADDR, timeout=30) as conn:
            conn.upload(b"hello")          # the path manager joins once MPTCP is confirmed
            scene.wait_counter(server, counters["server"], "MPTcpExtMPJoinAckRx")
            upload = conn.stream(block)
            marks["start"] = time.time()
            time.sleep(before)
            marks["fail"] = time.time()
            scene.event("WiFi fails: the router drops everything on the WiFi link")
            router.nft(WIFI_DOWN)
            scene.event("the connection manager makes cellular regular "
                        f"(endpoint id {cell_ep['id']} nobackup)")
            client.pm.endpoint("set", id=cell_ep["id"], flags=[])
            time.sleep(outage)
            marks["back"] = time.time()
            scene.event("WiFi is back")
            router.nft("delete table inet mptcplab_demo_wifi\n")
            scene.event("the connection manager makes cellular a backup again")
            client.pm.endpoint("set", id=cell_ep["id"], flags=["backup"])
            # The WiFi subflow resumes when its backed-off retransmission timer fires; if the
            # kernel had marked it stale, it counts the recovery.
            stale = (client.counters() - counters["client"])["MPTcpExtSubflowStale"]
            if stale:
                try:
                    scene.wait_counter(client, counters["client"], "MPTcpExtSubflowRecover",
                                       at_least=stale, timeout=20)
                    scene.event("the WiFi subflow works again (MPTcpExtSubflowRecover)")
                except LabError:
                    scene.progress("the WiFi subflow did not recover within 20 s")
            time.sleep(after)
            marks["end"] = time.time()
            read = upload.stop(timeout=10)
            scene.event(f"the upload stops; the server read {read:,} bytes")
        moved = {n: lab[n].counters() - counters[n] for n in ("client", "server")}
        view = scene.analyse()

    segs = view.segments

    def index(t: float) -> int:
        return next((i for i, s in enumerate(segs) if s.time >= t), len(segs))

    i_fail, i_back, i_end = index(marks["fail"]), index(marks["back"]), index(marks["end"])
    i_last = index(marks["end"] - 1.0)
    joins = view.options("MP_JOIN", length=12)
    scene.claim("the cellular subflow joined as a backup: MP_JOIN SYN with B=1 (the server "
                "counted MPJoinSynBackupRx=1)",
                len(joins) == 1 and joins[0][1]["backup"] and joins[0][0].seg.src == CELL
                and moved["server"]["MPTcpExtMPJoinSynBackupRx"] == 1)
    first_on_cell = bytes_outside(data_ranges(segs, addr=CELL, until=i_fail),
                                  data_ranges(segs, addr=WIFI, until=i_fail))
    copies = payload_bytes(segs[:i_fail], src=CELL)
    wifi_before = payload_bytes(segs[:i_fail], src=WIFI)
    scene.claim("while WiFi worked, cellular carried no new data",
                first_on_cell == 0 and wifi_before > 0,
                f"WiFi {wifi_before:,} bytes, cellular {copies:,}"
                + (" (copies of WiFi's data)" if copies else ""))
    prios = [(a.seg.src, o["backup"], a.seg.time) for a, o in view.options("MP_PRIO")]
    scene.claim("the kernel signalled each change with MP_PRIO on the cellular subflow: "
                "B=0 when WiFi failed, B=1 when it returned",
                [(src, b) for src, b, _ in prios] == [(CELL, False), (CELL, True)]
                and moved["client"]["MPTcpExtMPPrioTx"] == 2)
    cell_outage = payload_bytes(segs[i_fail:i_back], src=CELL)
    scene.claim("while WiFi was down, cellular carried the data", cell_outage > 0,
                f"{cell_outage:,} bytes in {outage:g} s")
    wifi_after = payload_bytes(segs[i_back:i_end], src=WIFI)
    cell_after = payload_bytes(segs[i_back:i_end], src=CELL)
    last_cell = bytes_outside(data_ranges(segs, addr=CELL, since=i_last, until=i_end),
                              data_ranges(segs, addr=WIFI, since=i_last, until=i_end))
    scene.claim("after WiFi returned the data went back to WiFi: most of it, and in the last "
                "second none new on cellular", wifi_after > cell_after and last_cell == 0,
                f"WiFi {wifi_after:,} bytes, cellular {cell_after:,}; "
                f"{last_cell:,} new on cellular in the last second")
    stale = moved["client"]["MPTcpExtSubflowStale"]
    resumed = next((s.time for s in segs[i_back:] if s.src == WIFI and s.payload_len
                    and s.time > marks["back"]), None)
    cell_stop = max((s.time for s in segs[i_back:i_end] if s.src == CELL and s.payload_len),
                    default=None)
    lines = [f"{'phase':<26}{'WiFi':>14}{'cellular':>14}",
             f"{'WiFi works':<26}{wifi_before:>14,}{copies:>14,}",
             f"{'WiFi down':<26}{payload_bytes(segs[i_fail:i_back], src=WIFI):>14,}"
             f"{cell_outage:>14,}",
             f"{'WiFi back':<26}{wifi_after:>14,}{cell_after:>14,}",
             "(payload bytes the client sent on each path, retransmissions included)"]
    if resumed is not None:
        lines.append(f"WiFi carried data again {resumed - marks['back']:.2f} s after it "
                     "returned (its retransmission timer had backed off)")
    if cell_stop is not None:
        lines.append(f"cellular's last data: {cell_stop - marks['back']:.2f} s after WiFi "
                     "returned")
    lines += [f"the kernel marked the stalled WiFi subflow stale {stale} time(s) "
              "(MPTcpExtSubflowStale) and sent its",
              "unacknowledged data again over cellular (the reinjections on the plot); with "
              "every regular",
              "subflow stale it would use a backup subflow even without MP_PRIO"]
    scene.explain("Who carried the upload (RFC 8684 §3.3.8):", *lines)
    scene.fact(wifi_before=wifi_before, cell_before=copies, cell_new_before=first_on_cell,
               wifi_outage=payload_bytes(segs[i_fail:i_back], src=WIFI),
               cell_outage=cell_outage, wifi_after=wifi_after, cell_after=cell_after,
               cell_new_last_second=last_cell, mp_prio=[b for _, b, _ in prios],
               subflow_stale=stale, server_read=read)
    scene.plot("throughput", side=CLIENT,
               title="backup demo: the upload's data sequence numbers and Mbit/s per path",
               rates=[("WiFi", _mbit(wifi_rate)), ("cellular", _mbit(cell_rate))])


def _mbit(rate: str) -> float:
    from mptcplab.topo.model import parse_rate

    value = parse_rate(rate)
    return (value or 0) / 1e6
