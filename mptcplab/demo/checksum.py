"""DSS checksums: negotiated in the handshake, then a middlebox changes one byte.

Both ends enable net.mptcp.checksum_enabled, so the A flag goes out in the SYN and SYN-ACK and
every DSS mapping carries a checksum over its bytes and a pseudo-header. The router between
them then rewrites one payload byte of one segment, fixing the TCP checksum as a rewriting
middlebox would: TCP cannot notice, only the DSS checksum can. The receiver finds the mapping
that does not add up and sends MP_FAIL naming it (RFC 8684 §3.7). With a single subflow the
RFC then expects an infinite mapping and a fallback to TCP. The demo shows what this kernel
does (on Linux 6.18 not that, and not the same thing every run: mostly the transfer stalls;
under load the data may go on in checksummed mappings, or have all left before the MP_FAIL),
and what the lab recomputes from the captures on both sides of the router.
"""

from __future__ import annotations

import threading

from mptcplab import crypto
from mptcplab.analysis import CLIENT, Tally, Tracker
from mptcplab.decode import Segment
from mptcplab.demo import Scene, mptcp_info
from mptcplab.errors import BadInput
from mptcplab.facts import find_options
from mptcplab.topo import CorruptPayload, catalogue
from mptcplab.traffic import connect, first_difference, pattern

TOPOLOGY = "client-router-server"
NEEDS = ("nft", "net.mptcp.checksum_enabled")
SECONDS = 7
ORDER = 50
SERVER_ADDR = "10.0.2.1"
M64 = 0xFFFFFFFFFFFFFFFF


def _mappings(segments: list[Segment]) -> Tally:
    """DSS checksum verdicts per mapping, as the sniffer's tracker counts them."""
    tracker = Tracker()
    for seg in segments:
        tracker.feed(seg)
    tracker.finish()
    return tracker.checksums


def run(scene: Scene, *, size: int = 1_000_000, nth: int = 60, watch: float = 1.5) -> None:
    if not 100_000 <= size <= 50_000_000:
        raise BadInput("checksum: size must be 100000..50000000 bytes")
    if not 50 <= nth <= size // 1500:
        raise BadInput(f"checksum: nth must be 50..{size // 1500}: past the first 64 KiB (a "
                       "bad first mapping makes this kernel fall back silently) and within "
                       "the data sent")
    if not 0.2 <= watch <= 30:
        raise BadInput("checksum: watch must be 0.2..30 seconds")
    box = CorruptPayload(nth=nth, offset=10, value=0xFF, dport=5000)
    topo = catalogue.get(TOPOLOGY, middleboxes=[box], checksum=True)
    scene.network_label = ["network", "router: rewrites a byte", f"of data segment {nth}"]
    sent = pattern(size)
    got: list[bytes] = []
    with scene.lab(topo) as lab:
        client, server, router = lab["client"], lab["server"], lab["router"]
        scene.capture(server, "eth0")
        scene.capture(client, "eth0", main=False)
        before = {n: lab[n].counters() for n in ("client", "server")}
        scene.progress(f"checksum_enabled=1 on both ends; the client sends {size:,} bytes")
        with connect(client, server, SERVER_ADDR) as conn:
            negotiated = [mptcp_info(s) for s in (conn.client, conn.server)]
            # The server reads for `watch` seconds: the MP_FAIL comes within milliseconds,
            # the rest of the time shows whether the data moves again.
            reader = threading.Thread(
                target=lambda: got.append(conn.upload_until_eof(sent, timeout=watch)),
                daemon=True)
            reader.start()
            scene.wait_counter(client, before["client"], "MPTcpExtMPFailRx")
            scene.event("MP_FAIL reached the client; the server's application keeps reading")
            reader.join(watch + 5)
        moved = {n: lab[n].counters() - before[n] for n in ("client", "server")}
        rewritten = sum(router.nft_counters().values())
        view = scene.analyse()

    read = got[0] if got else b""
    scene.claim("both ends use DSS checksums: A set in the SYN, the SYN-ACK and the third ACK, "
                "and MPTCP_INFO says csum_enabled on both sockets",
                all("A" in o["flags"] for length in (4, 12, 20)
                    for _, o in view.options("MP_CAPABLE", length=length))
                and all(i is not None and i.mptcpi_csum_enabled for i in negotiated))
    changed = {f: text for f, text in view.network.items() if text.startswith("changed")}
    scene.claim("the router changed one byte of one segment (its counter, and the two "
                "captures compared)", rewritten == 1 and len(changed) == 1,
                f"router counter {rewritten}; " + "; ".join(changed.values()))
    tally = view.tracker.checksums
    there = _mappings(view.other or [])
    scene.claim("the lab's verdict at the server: exactly one mapping's DSS checksum does not "
                "match the bytes that arrived", tally.invalid == 1 and tally.valid > 0,
                f"mappings: {tally.valid} ✓ {tally.invalid} ✗ {tally.unchecked} ?")
    scene.claim("the same data checks out in the capture at the client: the network changed "
                "it", there.invalid == 0 and there.valid > 0,
                f"mappings at the client: {there.valid} ✓ {there.invalid} ✗")
    conn_ = view.connection(1)
    failed = [(a, o) for a, o in view.options("DSS")
              if "dsn" in o and any(v is False for v in
                                    (a.verdicts(i).get("checksum_valid")
                                     for i in range(len(a.seg.options))))]
    fails = find_options(view.segments, "MP_FAIL")
    from_server = [(s, o) for s, o in fails if s.src == SERVER_ADDR]
    from_client = [(s, o) for s, o in fails if s.src != SERVER_ADDR]
    idsn = conn_.idsns[CLIENT]
    if failed and from_server and idsn is not None:
        dsn = failed[0][1]["dsn"]
        if failed[0][1]["dsn_len"] == 4:
            dsn = crypto.expand_dsn(dsn, idsn)
        scene.claim("the server's kernel counted the bad checksum (DataCsumErr=1) and sent "
                    "MP_FAIL naming the failed mapping's data sequence number",
                    moved["server"]["MPTcpExtDataCsumErr"] == 1
                    and from_server[0][1]["dsn"] == dsn,
                    f"mapping at byte {(dsn - idsn) & M64} of the client's stream, MP_FAIL "
                    f"dsn {(from_server[0][1]['dsn'] - idsn) & M64}")
    else:
        scene.claim("the server sent MP_FAIL naming the failed mapping", False,
                    f"{len(failed)} failed mappings, {len(from_server)} MP_FAIL from the server")
    infinite = [o for _, o in find_options(view.segments, "DSS")
                if o.get("data_level_len") == 0 and "dsn" in o]
    after = mapped_after = sent_before = 0
    isn = conn_.subflows[0].half_of(CLIENT).isn if conn_.subflows else -1
    if from_server and isn >= 0:
        mark = from_server[0][0].frame
        later = [s for s in view.segments if s.frame > mark and s.dst == SERVER_ADDR]
        after = sum(s.payload_len for s in later)
        mapped_after = sum(1 for s in later for o in s.options
                           if o["subtype"] == "DSS" and o.get("data_level_len")
                           and "checksum" in o)
        sent_before = max(((s.seq - isn + s.payload_len - 1) & 0xFFFFFFFF
                           for s in view.segments
                           if s.frame < mark and s.dst == SERVER_ADDR and s.payload_len),
                          default=0)
    if not after and sent_before >= size:
        followed = ("every byte had left the client before the MP_FAIL arrived: no data "
                    "followed it")
    elif after and infinite:
        followed = (f"{after:,} bytes of data followed, after the infinite mapping: the "
                    "connection fell back to TCP")
    elif after and mapped_after:
        followed = (f"{after:,} bytes of data followed, still in checksummed DSS mappings: "
                    "the connection stayed MPTCP")
    elif after:
        followed = f"{after:,} bytes of data followed the MP_FAIL"
    else:
        followed = (f"no data followed the MP_FAIL in the {watch:g} s the server read: the "
                    "transfer stalled")
    diffs = [i for i, (a, b) in enumerate(zip(sent, read)) if a != b]
    if diffs:
        i = diffs[0]
        what = (f"the changed byte among them (byte {i:,}: sent {sent[i]:#04x}, read "
                f"{read[i]:#04x}" + (f"; {len(diffs)} bytes differ)" if len(diffs) > 1 else ")"))
    else:
        what = "every byte as sent" if read == sent else "no byte changed"
    scene.explain(
        "After the MP_FAIL: what RFC 8684 §3.7 expects, and what this kernel did:",
        "RFC   with a single subflow, the sender of the failed data sends an infinite mapping "
        "(DSS",
        "      with data-level length 0); both ends fall back to TCP and the data goes on,",
        "      unprotected from then on.",
        f"here  the client answered with {len(from_client)} MP_FAIL of its own; its kernel "
        f"counted InfiniteMapTx={moved['client']['MPTcpExtInfiniteMapTx']},",
        f"      and {len(infinite)} infinite mapping"
        f"{' reached' if len(infinite) == 1 else 's reached'} the wire;",
        f"      {followed};",
        f"      the server's application read {len(read):,} of {size:,} bytes,",
        f"      {what}.")
    diff = first_difference(sent, read)
    scene.fact(size=size, read=len(read), first_difference=diff, router_rewrites=rewritten,
               checksums_valid=tally.valid, checksums_invalid=tally.invalid,
               mp_fail_from_server=len(from_server), mp_fail_from_client=len(from_client),
               infinite_mappings_on_wire=len(infinite),
               client_infinite_map_tx=moved["client"]["MPTcpExtInfiniteMapTx"],
               server_data_csum_err=moved["server"]["MPTcpExtDataCsumErr"],
               bytes_after_mp_fail=after, mappings_after_mp_fail=mapped_after,
               bytes_before_mp_fail=sent_before,
               fallback=conn_.fell_back())
    for frame in changed:
        scene.note(frame, "The router rewrote one byte of this segment and fixed the TCP "
                   "checksum, so TCP accepts it; only the DSS checksum of its mapping covers "
                   "the payload end to end.", "3.3.1")
    for ann, _ in failed[:1]:
        if ann.seg.frame not in changed:
            scene.note(ann.seg.frame, "The lab recomputed this mapping's DSS checksum over the "
                       "bytes that arrived: it does NOT match.", "3.3.1")
