"""How many segments per second does the Scapy-driven peer put on the wire? (root)

    python3 benchmarks/bench_peer.py [--segments N]

A peer in a two-host lab opens an MPTCP connection to a kernel listener and sends N data
segments (DSS mapping + checksum, 100 bytes each) while the kernel application reads them; the
figure is segments sent per second of wall time, and the kernel must have received every byte.
For comparison it also times Scapy's own send() for a few segments.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

from mptcplab.peer import MptcpPeer
from mptcplab.topo import IPPROTO_MPTCP, Lab, Topology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20000)
    args = parser.parse_args()
    topo = Topology("bench-peer")
    client, server = topo.host("client"), topo.host("server")
    topo.link(client, server, v4="10.0.1.0/24")
    with Lab(topo) as lab:
        lst = lab["server"].socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        lst.settimeout(5)
        total = args.segments * 100
        got = bytearray()

        def reader() -> None:
            conn, _ = lst.accept()
            conn.settimeout(10)
            while len(got) < total:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)
            conn.close()

        thread = threading.Thread(target=reader)
        thread.start()
        with MptcpPeer(lab["client"], checksum=True) as peer:
            peer.connect("10.0.1.2", 5000)
            payload = b"z" * 100
            start = time.perf_counter()
            for i in range(args.segments):
                peer.send(payload, mpc=False)
                if i % 200 == 199:       # stay inside the kernel's receive window
                    deadline = time.monotonic() + 5
                    while len(got) < (i + 1) * 100 - 60_000 and time.monotonic() < deadline:
                        time.sleep(0.0005)
            elapsed = time.perf_counter() - start
            thread.join(15)
            print(f"peer: {args.segments} DSS data segments (checksummed) in {elapsed:.2f} s "
                  f"= {args.segments / elapsed:.0f} segments/s; kernel received "
                  f"{len(got)} of {total} bytes")

            script = ("import time\n"
                      "from scapy.all import IP, TCP, send\n"
                      "pkt = IP(dst='10.0.1.2') / TCP(sport=40999, dport=9, flags='A')\n"
                      "t0 = time.perf_counter()\n"
                      "send(pkt, count=20, verbose=False)\n"
                      "print(time.perf_counter() - t0)\n")
            res = lab["client"].run([sys.executable, "-c", script], timeout=60).check()
            took = float(res.stdout.split()[-1])
            print(f"scapy send(): 20 segments in {took:.2f} s = {20 / took:.0f} segments/s")

if __name__ == "__main__":
    main()
