"""MP_JOIN: a second subflow joins the connection, its HMACs recomputed and checked.

A phone on WiFi and cellular connects to a server over WiFi; its path manager has a subflow
endpoint on the cellular address, so once the connection is established it opens a second
subflow from there. The MP_JOIN SYN names the connection by the server's token and carries a
random nonce; the SYN-ACK and the third ACK each carry an HMAC keyed with both MPTCP keys over
both nonces, proving the two ends are the ones that did the MP_CAPABLE handshake. The lab
recomputes both HMACs from the captured keys and nonces, then both subflows carry the data.
"""

from __future__ import annotations

from mptcplab import crypto
from mptcplab.analysis import CLIENT, SERVER
from mptcplab.demo import HEADERS, Scene, mptcp_info
from mptcplab.errors import BadInput
from mptcplab.topo import catalogue
from mptcplab.traffic import connect, pattern

TOPOLOGY = "wifi-cellular"
SECONDS = 5
ORDER = 20
SERVER_ADDR = "10.0.3.1"
CELL = "10.0.2.1"


def run(scene: Scene, *, size: int = 1_000_000) -> None:
    if not 1000 <= size <= 100_000_000:
        raise BadInput("join: size must be 1000..100000000 bytes")
    scene.network_label = ["network", "router (WiFi, cellular)"]
    data = pattern(size)
    with scene.lab(catalogue.get(TOPOLOGY)) as lab:
        client, server = lab["client"], lab["server"]
        scene.capture(client, "any", snaplen=HEADERS)
        before = {n: lab[n].counters() for n in ("client", "server")}
        scene.progress(f"the client connects to {SERVER_ADDR} over WiFi; its path manager "
                       f"has a subflow endpoint on the cellular address {CELL}")
        with connect(client, server, SERVER_ADDR) as conn:
            conn.upload(b"hello")      # the client's path manager joins once MPTCP is confirmed
            scene.wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            scene.progress(f"the cellular subflow is up; {size:,} bytes each way")
            up, down = conn.upload(data), conn.download(data)
            info = {CLIENT: mptcp_info(conn.client), SERVER: mptcp_info(conn.server)}
        moved = {n: lab[n].counters() - before[n] for n in ("client", "server")}
        view = scene.analyse()

    scene.claim(f"{size:,} bytes arrived intact each way", up == data and down == data)
    conn_ = view.connection(1)
    syns = view.options("MP_JOIN", length=12)
    synacks = view.options("MP_JOIN", length=16)
    acks = view.options("MP_JOIN", length=24)
    if not scene.claim("the capture shows one MP_JOIN handshake (SYN, SYN-ACK, ACK)",
                       len(syns) == len(synacks) == len(acks) == 1,
                       f"{len(syns)} SYN, {len(synacks)} SYN-ACK, {len(acks)} ACK"):
        return
    if not scene.claim("the capture holds both keys", None not in conn_.keys):
        return
    (syn_ann, syn), (_, synack), (_, ack) = syns[0], synacks[0], acks[0]
    ckey, skey = conn_.keys[CLIENT], conn_.keys[SERVER]
    assert ckey is not None and skey is not None
    r_a, r_b = syn["nonce"], synack["nonce"]
    token = crypto.key_token(skey)
    kernel_token = info[SERVER].mptcpi_token if info[SERVER] else None
    scene.claim("the MP_JOIN SYN names the connection by the server's token (derived from its "
                "key, and the one MPTCP_INFO reports)",
                syn["token"] == token == kernel_token,
                f"SYN {syn['token']:#010x}, from the key {token:#010x}, kernel "
                + (f"{kernel_token:#010x}" if kernel_token is not None else "-"))
    scene.claim("the join comes from the cellular address", syn_ann.seg.src == CELL,
                syn_ann.seg.src)
    synack_full = crypto.join_hmac(skey, ckey, r_b, r_a)
    ack_full = crypto.join_hmac(ckey, skey, r_a, r_b)
    synack_ok = int.from_bytes(synack_full[:8], "big") == synack["truncated_hmac"]
    ack_ok = ack_full[:20].hex() == ack["hmac"]
    scene.explain(
        "The MP_JOIN HMACs, recomputed from the captured keys and nonces (RFC 8684 §3.2):",
        f"client key {ckey:#018x} (A)   nonce R_A {r_a:#010x} (in the SYN)",
        f"server key {skey:#018x} (B)   nonce R_B {r_b:#010x} (in the SYN-ACK)",
        "SYN-ACK: HMAC-SHA256(key = B ‖ A, message = R_B ‖ R_A)",
        f"         = {synack_full.hex()[:32]}",
        f"           {synack_full.hex()[32:]}",
        f"         its leftmost 64 bits {synack_full[:8].hex()}; the SYN-ACK carries "
        f"{synack['truncated_hmac']:016x} " + ("✓" if synack_ok else "✗"),
        "ACK:     HMAC-SHA256(key = A ‖ B, message = R_A ‖ R_B)",
        f"         leftmost 160 bits {ack_full[:20].hex()}",
        f"         the third ACK carries {ack['hmac']} " + ("✓" if ack_ok else "✗"))
    scene.claim("the SYN-ACK's truncated HMAC recomputes from both keys and nonces", synack_ok)
    scene.claim("the third ACK's HMAC recomputes from both keys and nonces", ack_ok)
    tracker_ok = [a.verdicts(i).get("hmac_valid") for a, _ in (synacks[0], acks[0])
                  for i, o in enumerate(a.seg.options) if o["subtype"] == "MP_JOIN"]
    scene.claim("the sniffer's tracker agrees (both HMACs ✓)", tracker_ok == [True, True])
    scene.claim("the kernel checked them too: the server accepted the join "
                "(MPJoinAckRx=1, MPJoinAckHMacFailure=0), the client the SYN-ACK "
                "(MPJoinSynAckHMacFailure=0)",
                moved["server"]["MPTcpExtMPJoinAckRx"] == 1
                and moved["server"]["MPTcpExtMPJoinAckHMacFailure"] == 0
                and moved["client"]["MPTcpExtMPJoinSynAckHMacFailure"] == 0)
    joined = [s for s in conn_.subflows if s.kind == "MP_JOIN"]
    if joined:
        sub = joined[0]
        up2, down2 = sub.half_of(CLIENT).bytes, sub.half_of(SERVER).bytes
        total_up = sum(s.half_of(CLIENT).bytes for s in conn_.subflows) or 1
        total_down = sum(s.half_of(SERVER).bytes for s in conn_.subflows) or 1
        scene.claim("the joined subflow carried data both ways", up2 > 0 and down2 > 0,
                    f"{up2:,} bytes up ({100 * up2 / total_up:.0f}%), {down2:,} down "
                    f"({100 * down2 / total_down:.0f}%)")
        scene.fact(joined_bytes_to_server=up2, joined_bytes_to_client=down2)
    scene.claim("MPTCP_INFO counts one extra subflow on each socket",
                all(i is not None and i.mptcpi_subflows == 1 for i in info.values()))
    scene.fact(client_key=ckey, server_key=skey, token=syn["token"], server_token=token,
               kernel_server_token=kernel_token, nonce_a=r_a, nonce_b=r_b,
               synack_hmac=synack["truncated_hmac"], ack_hmac=ack["hmac"],
               synack_hmac_ok=synack_ok, ack_hmac_ok=ack_ok)
