"""MP_CAPABLE: the three-way handshake and the first data; token and IDSN from the keys.

The client opens one MPTCP connection to the server through a router, sends a few hundred
bytes and gets a reply. MP_CAPABLE carries each end's 64-bit key: the server's in the SYN-ACK,
both in the third ACK and again with the first data. From its key each end derives a token
(the name the other end gives this connection when it joins a subflow) and an initial data
sequence number, IDSN (the first data byte is IDSN + 1). The lab derives both from the captured
keys and compares them with what the kernel says about its own sockets (MPTCP_INFO).
"""

from __future__ import annotations

from mptcplab import crypto
from mptcplab.analysis import CLIENT, SERVER, SIDE_NAMES
from mptcplab.demo import Scene, mptcp_info
from mptcplab.errors import BadInput
from mptcplab.topo import catalogue
from mptcplab.traffic import connect, pattern

TOPOLOGY = "client-router-server"
SECONDS = 4
ORDER = 10
SERVER_ADDR = "10.0.2.1"


def run(scene: Scene, *, upload: int = 600, download: int = 300) -> None:
    if not 1 <= upload <= 10_000_000 or not 0 <= download <= 10_000_000:
        raise BadInput("handshake: upload must be 1..10000000 bytes, download 0..10000000")
    scene.network_label = ["network", "router"]
    sent, back = pattern(upload), pattern(download, seed=1)
    with scene.lab(catalogue.get(TOPOLOGY)) as lab:
        client, server = lab["client"], lab["server"]
        scene.capture(client, "eth0")
        scene.progress(f"the client connects to {SERVER_ADDR} port 5000 (IPPROTO_MPTCP), "
                       f"sends {upload} bytes, the server answers with {download}")
        with connect(client, server, SERVER_ADDR) as conn:
            up = conn.upload(sent)
            down = conn.download(back) if download else b""
            kernel = {CLIENT: mptcp_info(conn.client), SERVER: mptcp_info(conn.server)}
        view = scene.analyse()

    scene.claim(f"the server read the {upload} bytes sent and the client the {download} "
                "bytes of the reply", up == sent and down == back)
    conn_ = view.connection(1)
    scene.claim("both sockets stayed MPTCP (MPTCP_INFO answers on both)",
                None not in kernel.values())
    scene.claim("the capture holds both keys", None not in conn_.keys)
    if None in conn_.keys or None in kernel.values():
        return
    moved = {CLIENT: upload, SERVER: download}
    derived = {}
    for side in (CLIENT, SERVER):
        key = conn_.keys[side]
        assert key is not None
        info = kernel[side]
        assert info is not None
        digest = crypto.key_digest(key).hex()          # shown on screen, then split
        token, idsn = crypto.token_and_idsn(key)
        derived[side] = (token, idsn)
        kernel_idsn = (info.mptcpi_write_seq - 1 - moved[side]) & 0xFFFFFFFFFFFFFFFF
        where = "SYN-ACK" if side == SERVER else "third ACK"
        name = SIDE_NAMES[side]
        scene.explain(
            f"The {name}'s key gives its token and IDSN (RFC 8684 §3.1):",
            f"{name} key      {key:#018x}   (captured in the {where})",
            f"SHA-256(key)    {digest[:32]}",
            f"                {digest[32:]}",
            f"token           {token:#010x}           = the first 4 bytes of the hash",
            f"                MPTCP_INFO on the {name}'s socket: {info.mptcpi_token:#010x} "
            + ("✓" if info.mptcpi_token == token else "✗"),
            f"IDSN            {idsn:#018x}   = the last 8 bytes of the hash",
            f"                the kernel's next DSN to send, {info.mptcpi_write_seq:#018x}, minus 1,",
            f"                minus the {moved[side]} bytes sent: {kernel_idsn:#018x} "
            + ("✓" if kernel_idsn == idsn else "✗"))
        scene.claim(f"the {name}'s token derived from its captured key is the kernel's "
                    "(MPTCP_INFO)", info.mptcpi_token == token,
                    f"{token:#010x} from the key, {info.mptcpi_token:#010x} from the kernel")
        scene.claim(f"the {name}'s IDSN derived from its key is where the kernel's data "
                    "sequence numbers start", kernel_idsn == idsn,
                    f"{idsn:#x} from the key, {kernel_idsn:#x} from MPTCP_INFO")
        peer = kernel[1 - side]
        assert peer is not None
        scene.claim(f"the {SIDE_NAMES[1 - side]} expects the {name}'s next byte at IDSN + 1 + "
                    f"{moved[side]} (its MPTCP_INFO rcv_nxt)",
                    peer.mptcpi_rcv_nxt == (idsn + 1 + moved[side]) & 0xFFFFFFFFFFFFFFFF)
    first = [(a, o) for a, o in view.options("MP_CAPABLE") if "data_level_len" in o]
    if first:
        scene.claim("the first data rides on MP_CAPABLE with the client's key and a data-level "
                    "length", first[0][1]["sender_key"] == conn_.keys[CLIENT])
    for ann, opt in view.options("MP_CAPABLE", length=12):
        if ann.seg.tcp_flags == "SA":
            token, idsn = derived[SERVER]
            scene.note(ann.seg.frame, "The server accepts MPTCP and sends its key; SHA-256 of "
                       f"it gives the server's token {token:#010x} and IDSN {idsn:#x} (derived "
                       "below).", "3.1")
    for ann, opt in view.options("MP_CAPABLE", length=20):
        token, idsn = derived[CLIENT]
        scene.note(ann.seg.frame, "Third ACK: the client repeats both keys, so both ends now "
                   f"know both tokens and IDSNs; the client's token is {token:#010x}.", "3.1")
    scene.fact(client_key=conn_.keys[CLIENT], server_key=conn_.keys[SERVER],
               client_token=conn_.tokens[CLIENT], server_token=conn_.tokens[SERVER],
               client_idsn=conn_.idsns[CLIENT], server_idsn=conn_.idsns[SERVER],
               kernel_client_token=kernel[CLIENT].mptcpi_token if kernel[CLIENT] else None,
               kernel_server_token=kernel[SERVER].mptcpi_token if kernel[SERVER] else None)
