"""ADD_ADDR: the server announces its second address, the client echoes it and joins there.

Client and server are linked by two paths. The server's path manager has a signal endpoint on
its second address: once the connection is established it announces that address with
ADD_ADDR, signed by an HMAC keyed with both MPTCP keys (so a third party cannot make the client
connect elsewhere). The client echoes the announcement (no HMAC) to say it arrived, then opens
a subflow to the announced address with MP_JOIN. The lab recomputes the HMAC from the captured
keys and checks the echo and the join against the announcement.
"""

from __future__ import annotations

from mptcplab import crypto
from mptcplab.analysis import CLIENT, SERVER
from mptcplab.demo import HEADERS, Scene
from mptcplab.errors import BadInput
from mptcplab.topo import catalogue
from mptcplab.traffic import connect, pattern

TOPOLOGY = "two-paths"
SECONDS = 5
ORDER = 30
SERVER_ADDR = "10.0.1.2"
ANNOUNCED = "10.0.2.2"


def run(scene: Scene, *, size: int = 500_000) -> None:
    if not 1000 <= size <= 100_000_000:
        raise BadInput("add-addr: size must be 1000..100000000 bytes")
    topo = catalogue.get(TOPOLOGY)
    server_node = topo.nodes["server"]
    server_node.endpoints = [ep for ep in server_node.endpoints if ep.addr.version == 4]
    scene.network_label = ["network", "two links"]
    data = pattern(size)
    with scene.lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        scene.capture(client, "any", snaplen=HEADERS)
        before = {n: lab[n].counters() for n in ("client", "server")}
        scene.progress(f"the client connects to {SERVER_ADDR}; the server has a signal "
                       f"endpoint on {ANNOUNCED}")
        with connect(client, server, SERVER_ADDR) as conn:
            scene.wait_counter(server, before["server"], "MPTcpExtMPJoinAckRx")
            scene.progress(f"the second subflow is up; {size:,} bytes each way")
            up, down = conn.upload(data), conn.download(data)
        moved = {n: lab[n].counters() - before[n] for n in ("client", "server")}
        view = scene.analyse()

    scene.claim(f"{size:,} bytes arrived intact each way", up == data and down == data)
    conn_ = view.connection(1)
    adds = [(a, o) for a, o in view.options("ADD_ADDR") if not o["echo"]]
    echoes = [(a, o) for a, o in view.options("ADD_ADDR") if o["echo"]]
    if not scene.claim("the server announced one address and the client echoed it",
                       len(adds) >= 1 and len(echoes) >= 1,
                       f"{len(adds)} ADD_ADDR, {len(echoes)} echo"):
        return
    if not scene.claim("the capture holds both keys", None not in conn_.keys):
        return
    add_ann, add = adds[0]
    echo_ann, echo = echoes[0]
    skey, ckey = conn_.keys[SERVER], conn_.keys[CLIENT]
    assert skey is not None and ckey is not None
    scene.claim("the ADD_ADDR comes from the server and names its second address",
                add_ann.half is not None and add_ann.half.side == SERVER
                and add["addr"] == ANNOUNCED, f"id {add['addr_id']} {add['addr']}")
    message = crypto.add_addr_message(add["addr_id"], add["addr"], add["port"])
    full = crypto.mptcp_hmac(crypto.key_bytes(skey) + crypto.key_bytes(ckey), message)
    mine = int.from_bytes(full[-8:], "big")
    ok = mine == add["hmac"]
    scene.explain(
        "The ADD_ADDR HMAC, recomputed from the captured keys (RFC 8684 §3.4.1):",
        f"key      server key ‖ client key = {skey:016x} {ckey:016x}",
        f"message  address id ‖ address ‖ port = {message.hex()}"
        f"  (id {add['addr_id']}, {add['addr']}, port {add['port'] or 0}: none given)",
        f"HMAC-SHA256 = {full.hex()[:32]}",
        f"              {full.hex()[32:]}",
        f"its rightmost 64 bits {mine:016x}; the ADD_ADDR carries {add['hmac']:016x} "
        + ("✓" if ok else "✗"))
    scene.claim("the ADD_ADDR's HMAC recomputes from both keys (the sender's first)", ok,
                f"{add['hmac']:#018x}")
    verdict = [add_ann.verdicts(i).get("hmac_valid") for i, o in enumerate(add_ann.seg.options)
               if o["subtype"] == "ADD_ADDR"]
    scene.claim("the sniffer's tracker agrees (HMAC ✓)", verdict == [True])
    scene.claim("the client's echo repeats the id and address, without an HMAC",
                echo["addr_id"] == add["addr_id"] and echo["addr"] == add["addr"]
                and echo["hmac"] is None and echo_ann.half is not None
                and echo_ann.half.side == CLIENT)
    joins = view.options("MP_JOIN", length=12)
    to_announced = [(a, o) for a, o in joins if a.seg.dst == ANNOUNCED]
    scene.claim("the client then joined the announced address with the server's token",
                len(to_announced) == 1 and to_announced[0][1]["token"] == conn_.tokens[SERVER]
                and to_announced[0][0].seg.frame > echo_ann.seg.frame,
                f"MP_JOIN SYN to {ANNOUNCED}" if to_announced else "no MP_JOIN to it")
    scene.claim("the kernels agree: the client counted the announcement (AddAddr=1), the "
                "server the echo (EchoAdd=1)",
                moved["client"]["MPTcpExtAddAddr"] == 1
                and moved["server"]["MPTcpExtEchoAdd"] == 1)
    joined = [s for s in conn_.subflows if s.kind == "MP_JOIN"]
    if joined:
        sub = joined[0]
        carried = sub.half_of(CLIENT).bytes + sub.half_of(SERVER).bytes
        scene.claim("the subflow to the announced address carried data", carried > 0,
                    f"{carried:,} bytes")
    scene.note(add_ann.seg.frame, f"The server announces its second address {ANNOUNCED} "
               f"(id {add['addr_id']}); the HMAC of both keys proves the announcement comes "
               "from the server: the lab recomputed it, it matches (derived below).", "3.4.1")
    scene.fact(client_key=ckey, server_key=skey, addr_id=add["addr_id"], addr=add["addr"],
               hmac=add["hmac"], hmac_recomputed=mine, hmac_ok=ok)
