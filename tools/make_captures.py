"""Record the lab's own MPTCP captures from this machine's kernel (root).

    python3 tools/make_captures.py [--out tests/data]     # the small captures the tests read
    python3 tools/make_captures.py --bulk FILE            # >= 100k MPTCP packets, headers only

Each capture is a real kernel connection between two lab namespaces (two paths, see
``two_paths``), recorded with tcpdump on the client's "any" interface (Linux cooked v2 frames):

  kernel-v1-join.pcap      IPv4: MP_CAPABLE with data, ADD_ADDR (HMAC) and its echo, MP_JOIN
                           on the second path, DSS mappings and acks, DATA_FIN
  kernel-v1-csum.pcap      the same with checksum_enabled on both hosts: A flag, MP_CAPABLE of
                           length 24, DSS checksums over captured payload
  kernel-v1-v6.pcap        the same over IPv6 (ADD_ADDR of an IPv6 address)
  kernel-v1-pm.pcap        path manager traffic: ADD_ADDR with a port and the join to it,
                           MP_PRIO (backup), REMOVE_ADDR, and a close with unread data
                           (MP_FASTCLOSE, MP_TCPRST)

(The kernel does not announce an IPv6 address with a port while timestamps are on: 30 + 12
option bytes do not fit in 40.)

Alongside each pcap, FILE.keys.json records what the test cannot see on the wire in advance
(the addresses and ports, the bytes sent) so tests compare against it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mptcplab.topo import IPPROTO_MPTCP, Lab, Topology

ROOT = Path(__file__).resolve().parents[1]
PORT = 5001


def two_paths(*, checksum: bool = False, announce: str = "10.0.2.2",
              port: int | None = None, rate: str | int | None = None) -> Topology:
    """Client and server joined by two links (tbf-shaped to ``rate`` each, if given); the
    server announces a second address for the client to join."""
    topo = Topology("captures")
    mptcp = {"checksum_enabled": int(checksum), "blackhole_timeout": 0}
    client = topo.host("client", mptcp=mptcp).set_limits(subflows=2, add_addr_accepted=2)
    server = topo.host("server", mptcp=mptcp).set_limits(subflows=2, add_addr_accepted=2)
    for i in (1, 2):
        topo.link(client, server, v4=f"10.0.{i}.0/24", v6=f"dead:beef:{i}::/64", rate=rate)
    server.endpoint(announce, "signal", id=2, port=port)
    return topo


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_captures: timed out waiting for {what}")
        time.sleep(0.02)


def subflows(lab: Lab) -> int:
    """Subflows the server has accepted with MP_JOIN (it counts the joins' third ACKs)."""
    return lab["server"].counters().get("MPTcpExtMPJoinAckRx", 0)


class Server:
    """An MPTCP server in the lab that reads everything a client sends (or not, on request)."""

    def __init__(self, lab: Lab, family: int, read: bool = True) -> None:
        self.sock = lab["server"].socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("", PORT))   # any address: joins arrive on the announced one
        self.sock.listen(1)
        self.received = bytearray()
        self.conn: socket.socket | None = None
        self.read = read
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.conn, _ = self.sock.accept()
        while self.read:
            chunk = self.conn.recv(65536)
            if not chunk:
                break
            self.received += chunk

    def close(self) -> None:
        self.thread.join(10)
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


def client_socket(lab: Lab, family: int) -> socket.socket:
    return lab["client"].socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)


def record_transfer(out: Path, name: str, topo: Topology, family: int, meta: dict) -> None:
    """A client sends data before and after the second subflow joins, then closes."""
    first, second = os.urandom(3000), os.urandom(20000)
    with Lab(topo) as lab:
        srv_addr = lab["server"].addr("eth0", 6 if family == socket.AF_INET6 else 4)
        pcap = out / f"{name}.pcap"
        with lab["client"].capture("any", pcap, filter="tcp"):
            server = Server(lab, family)
            cli = client_socket(lab, family)
            cli.connect((srv_addr, PORT))
            cli.sendall(first)
            wait_for(lambda: subflows(lab) >= 1, what="the second subflow")
            time.sleep(0.1)
            cli.sendall(second)
            cli.shutdown(socket.SHUT_WR)
            server.close()
            cli.close()
            time.sleep(0.3)
        assert bytes(server.received) == first + second, "the transfer lost data"
    meta.update(bytes_sent=len(first) + len(second), server=srv_addr, port=PORT)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {pcap} ({pcap.stat().st_size} bytes)")


def record_pm(out: Path) -> None:
    """ADD_ADDR with a port, MP_PRIO, REMOVE_ADDR, then a close with unread data
    (MP_FASTCLOSE + MP_TCPRST)."""
    topo = two_paths(port=10100)
    with Lab(topo) as lab:
        pcap = out / "kernel-v1-pm.pcap"
        with lab["client"].capture("any", pcap, filter="tcp"):
            server = Server(lab, socket.AF_INET, read=False)
            cli = client_socket(lab, socket.AF_INET)
            cli.connect(("10.0.1.2", PORT))
            cli.sendall(b"x" * 1000)
            wait_for(lambda: subflows(lab) >= 1, what="the second subflow")
            time.sleep(0.1)
            lab["server"].pm.endpoint("set", id=2, flags=["backup"])    # -> MP_PRIO
            time.sleep(0.2)
            lab["server"].pm.endpoint("del", id=2)                      # -> REMOVE_ADDR
            time.sleep(0.3)
            cli.sendall(b"y" * 1000)
            time.sleep(0.2)
            server.thread.join(5)
            assert server.conn is not None
            server.conn.close()          # 2000 bytes unread: the kernel fast-closes
            time.sleep(0.3)
            cli.close()
            server.sock.close()
            time.sleep(0.2)
    (out / "kernel-v1-pm.json").write_text(json.dumps(
        {"server": "10.0.1.2", "port": PORT, "checksum": False, "announced": "10.0.2.2",
         "announced_id": 2,
         "announced_port": 10100},
        indent=1) + "\n")
    print(f"wrote {pcap} ({pcap.stat().st_size} bytes)")


def offloads_off(lab: Lab) -> None:
    """Segmentation offloads off, so the capture sees wire-sized segments."""
    from pyroute2.ethtool.ioctl import IoctlEthtool

    def body(ifnames: list[str]) -> None:
        for ifname in ifnames:
            eth = IoctlEthtool(ifname)
            try:
                for flag in ("tcp-segmentation-offload", "generic-segmentation-offload",
                             "generic-receive-offload"):
                    eth.set_offload_flag(flag, 0)
            finally:
                eth.close()

    for name in ("client", "server"):
        lab[name].call(body, ["eth0", "eth1"])


def record_bulk(path: Path, packets: int) -> None:
    """A bulk transfer over both paths, headers only, until tcpdump has `packets` packets.

    The capture starts before the connection, so it holds the MP_CAPABLE handshake and the
    MP_JOIN of the second subflow: an analyser can group the subflows by token and check HMACs.
    """
    topo = two_paths()
    with Lab(topo) as lab:
        offloads_off(lab)
        chunk = b"\0" * 65536
        with lab["client"].capture("any", path, filter="tcp", snaplen=128) as cap:
            server = Server(lab, socket.AF_INET)
            cli = client_socket(lab, socket.AF_INET)
            cli.connect(("10.0.1.2", PORT))
            wait_for(lambda: subflows(lab) >= 1, what="the second subflow")
            deadline = time.monotonic() + 120
            sent = 0
            while time.monotonic() < deadline:
                cli.sendall(chunk)
                sent += len(chunk)
                if sent % (64 * len(chunk)) == 0 and _pcap_count(path) >= packets:
                    break
            cli.shutdown(socket.SHUT_WR)
            server.close()
            cli.close()
        print(f"wrote {path}: {cap.packets} packets, {sent} bytes sent", file=sys.stderr)


def _pcap_count(path: Path) -> int:
    """Packets in a growing headers-only pcap, estimated from its size (128-byte snaplen)."""
    try:
        return path.stat().st_size // (16 + 110)
    except FileNotFoundError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "data"))
    parser.add_argument("--bulk", metavar="FILE", help="record a bulk capture instead")
    parser.add_argument("--packets", type=int, default=110_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make_captures: needs root (network namespaces)", file=sys.stderr)
        return 4
    if args.bulk:
        record_bulk(Path(args.bulk), args.packets)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_transfer(out, "kernel-v1-join", two_paths(), socket.AF_INET,
                    {"checksum": False, "announced": "10.0.2.2", "announced_id": 2})
    record_transfer(out, "kernel-v1-csum", two_paths(checksum=True), socket.AF_INET,
                    {"checksum": True, "announced": "10.0.2.2", "announced_id": 2})
    record_transfer(out, "kernel-v1-v6", two_paths(announce="dead:beef:2::2"), socket.AF_INET6,
                    {"checksum": False, "announced": "dead:beef:2::2", "announced_id": 2})
    record_pm(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
