"""Fallback: a middlebox drops SYNs carrying MP_CAPABLE; after a few tries, plain TCP.

The router between client and server runs a middlebox that silently drops every SYN with the
MP_CAPABLE option, as some firewalls drop unknown TCP options. The client's kernel retries the
SYN with MP_CAPABLE `syn_retrans_before_tcp_fallback` times (the sysctl, set here from the
demo's `retries`), then sends it without the option: that SYN gets through and the connection
works as plain TCP. A capture at each end of the network shows which SYNs the router dropped;
the router's own counter and the sockets (MPTCP_INFO refuses a fallen-back socket) confirm it.
"""

from __future__ import annotations

from mptcplab.demo import Scene, mptcp_info
from mptcplab.errors import BadInput
from mptcplab.facts import has
from mptcplab.topo import DropMpCapableSyn, catalogue
from mptcplab.traffic import pattern, transfer

TOPOLOGY = "client-router-server"
NEEDS = ("nft", "net.mptcp.syn_retrans_before_tcp_fallback")
SECONDS = 8
ORDER = 40
SERVER_ADDR = "10.0.2.1"


def run(scene: Scene, *, retries: int = 2, size: int = 3000) -> None:
    if not 0 <= retries <= 5:
        raise BadInput("fallback: retries must be 0..5 (each adds about a second)")
    if not 1 <= size <= 10_000_000:
        raise BadInput("fallback: size must be 1..10000000 bytes")
    topo = catalogue.get(TOPOLOGY, middleboxes=[DropMpCapableSyn()])
    topo.nodes["client"].mptcp["syn_retrans_before_tcp_fallback"] = str(retries)
    scene.network_label = ["network", "router: drops SYNs", "carrying MP_CAPABLE"]
    up, down = pattern(size), pattern(size // 2, seed=1)
    with scene.lab(topo) as lab:
        client, server, router = lab["client"], lab["server"], lab["router"]
        scene.capture(client, "eth0")
        scene.capture(server, "eth0", main=False)
        before = client.counters()
        scene.progress(f"the client connects to {SERVER_ADDR} with IPPROTO_MPTCP "
                       f"(syn_retrans_before_tcp_fallback={retries}) and sends {size} bytes")
        infos = []

        def during(conn) -> None:   # once the data is on its way: what the sockets say now
            infos.append((mptcp_info(conn.client), mptcp_info(conn.server)))

        got = transfer(client, server, SERVER_ADDR, upload=up, download=down, during=during,
                       timeout=30)
        moved = client.counters() - before
        dropped = sum(router.nft_counters().values())
        view = scene.analyse()

    syns = [a for a in view.annotated if a.seg.tcp_flags == "S"]
    capable = [a for a in syns if has(a.seg, "MP_CAPABLE")]
    plain = [a for a in syns if not has(a.seg, "MP_CAPABLE")]
    lost = [a for a in capable if view.network.get(a.seg.frame, "").startswith("dropped")]
    scene.claim(f"the client sent 1 + {retries} SYNs with MP_CAPABLE, then one without",
                len(capable) == 1 + retries and len(plain) == 1
                and syns[-1] is plain[0] if plain else False,
                f"{len(capable)} with, {len(plain)} without")
    scene.claim("every MP_CAPABLE SYN was dropped in the network: the capture at the server "
                "never saw one, the router's middlebox counted them",
                len(lost) == len(capable) == dropped,
                f"{len(lost)} missing at the server, router counter {dropped}")
    arrived = [s for s in (view.other or []) if s.tcp_flags == "S"]
    scene.claim("the only SYN that reached the server carried no MPTCP option",
                len(arrived) == 1 and not arrived[0].options)
    if len(plain) == 1 and capable:
        scene.claim("the plain SYN retries the same connection attempt (same port, same "
                    "initial sequence number)",
                    plain[0].seg.sport == capable[0].seg.sport
                    and plain[0].seg.seq == capable[0].seg.seq)
    gaps = [b.seg.time - a.seg.time for a, b in zip(syns, syns[1:])]
    if gaps:
        scene.explain("When the SYNs left the client (the kernel's retransmission timer):",
                      *[f"SYN {i + 1} {'with' if has(a.seg, 'MP_CAPABLE') else 'without'} "
                        f"MP_CAPABLE at {a.seg.time - syns[0].seg.time:6.3f} s"
                        + (f"  (+{gaps[i - 1]:.3f} s)" if i else "")
                        for i, a in enumerate(syns)])
    scene.claim("the data arrived intact over plain TCP", got.intact)
    scene.claim("both ends know they fell back: MPTCP_INFO is refused on both sockets",
                got.client_fallback and got.server_fallback
                and all(c is None and s is None for c, s in infos))
    scene.claim("the client's kernel counted the fallback (MPCapableSYNTXDrop=1)",
                moved["MPTcpExtMPCapableSYNTXDrop"] == 1)
    conn = view.connection(1)
    scene.claim("the sniffer sees one connection that fell back to TCP", conn.fell_back())
    for a in lost:
        scene.note(a.seg.frame, ("The client offers MPTCP with MP_CAPABLE." if a is capable[0]
                                 else f"No answer: the client sends the MP_CAPABLE SYN again "
                                 f"(attempt {capable.index(a) + 1}).")
                   + " The router drops it: the server never sees it.", "3.1")
    scene.fact(retries=retries, mp_capable_syns=len(capable), plain_syns=len(plain),
               dropped_by_router=dropped, syn_times=[round(a.seg.time - syns[0].seg.time, 6)
                                                     for a in syns],
               client_fallback=got.client_fallback, server_fallback=got.server_fallback)
