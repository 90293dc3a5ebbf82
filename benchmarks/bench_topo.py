"""Topology benchmarks (root): print figures, assert nothing.

1. Up + down of the two-path topology in-process (Lab) vs an `ip` command script that builds
   and removes the same thing (namespaces, veths, v4+v6 addresses, tbf, source rules and tables,
   MPTCP limits and endpoints), side by side.
2. A kernel MPTCP bulk upload over the two 100 Mbit/s paths, as a share of the 200 Mbit/s sum.

    sudo python benchmarks/bench_topo.py [--rounds 50] [--seconds 10] [--mtu 1500 --mtu 9000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

from mptcplab.topo import IPPROTO_MPTCP, Lab, catalogue
from mptcplab.topo.naming import PREFIX


def ip_script(tag: str) -> tuple[str, str]:
    """The two-path topology as `ip` commands (what the lab does, the usual way)."""
    c, s = f"{PREFIX}{tag}-c", f"{PREFIX}{tag}-s"
    up = [f"ip netns add {c}", f"ip netns add {s}"]
    for n in (c, s):
        up += [f"ip netns exec {n} sysctl -qw net.ipv6.conf.all.accept_dad=0",
               f"ip netns exec {n} sysctl -qw net.ipv6.conf.default.accept_dad=0"]
    for i in (1, 2):
        up.append(f"ip -n {c} link add eth{i - 1} type veth peer name eth{i - 1} netns {s}")
    for n, host in ((c, 1), (s, 2)):
        up.append(f"ip -n {n} link set lo up")
        for i in (1, 2):
            dev = f"eth{i - 1}"
            up += [f"ip -n {n} addr add 10.0.{i}.{host}/24 dev {dev}",
                   f"ip -n {n} addr add dead:beef:{i}::{host}/64 dev {dev} nodad",
                   f"ip -n {n} link set {dev} up",
                   f"ip -n {n} route add 10.0.{i}.0/24 dev {dev} table 10{i}",
                   f"ip -n {n} -6 route add dead:beef:{i}::/64 dev {dev} table 10{i}",
                   f"ip -n {n} rule add from 10.0.{i}.{host} table 10{i} pref 100{i}",
                   f"ip -n {n} -6 rule add from dead:beef:{i}::{host} table 10{i} pref 100{i}",
                   (f"tc -n {n} qdisc add dev {dev} root tbf rate 100mbit burst 65536 "
                    "latency 50ms")]
        up.append(f"ip -n {n} mptcp limits set subflows 1 add_addr_accepted 1")
    up += [f"ip -n {s} mptcp endpoint add 10.0.2.2 signal",
           f"ip -n {s} mptcp endpoint add dead:beef:2::2 signal"]
    down = [f"ip netns del {c}", f"ip netns del {s}"]
    return "set -e\n" + "\n".join(up) + "\n", "\n".join(down) + "\n"


def bench_up_down(rounds: int) -> None:
    topo = catalogue.get("two-paths")
    with Lab(topo):
        pass  # warm-up: imports, genl family lookup
    lab_times = []
    t_all = time.perf_counter()
    for _ in range(rounds):
        t0 = time.perf_counter()
        with Lab(topo):
            pass
        lab_times.append(time.perf_counter() - t0)
    lab_loop = (time.perf_counter() - t_all) / rounds

    tag = f"b{os.getpid() % 10000}"
    up, down = ip_script(tag)
    ip_times = []
    t_all = time.perf_counter()
    for _ in range(rounds):
        t0 = time.perf_counter()
        try:
            subprocess.run(["bash", "-c", up], check=True)
        finally:
            subprocess.run(["bash", "-c", down], check=False, stderr=subprocess.DEVNULL)
        ip_times.append(time.perf_counter() - t0)
    ip_loop = (time.perf_counter() - t_all) / rounds

    def row(name: str, xs: list[float], loop: float) -> str:
        q = statistics.quantiles(xs, n=10)
        return (f"{name:<28} median {statistics.median(xs) * 1e3:6.1f} ms   p10 "
                f"{q[0] * 1e3:6.1f}   p90 {q[-1] * 1e3:6.1f}   loop/round {loop * 1e3:6.1f} ms")

    print(f"two-path topology, up + down, {rounds} rounds")
    print(row("Lab (pyroute2, in-process)", lab_times, lab_loop))
    print(row("ip/tc command script", ip_times, ip_loop))
    print(f"speed-up (median): {statistics.median(ip_times) / statistics.median(lab_times):.1f}x")


def tx_bytes(lab: Lab) -> int:
    """Bytes the client's tbf shapers let out: every segment with its Ethernet/IP/TCP headers
    (the qdisc accounts a GSO packet as the frames it becomes), i.e. what the rate limits."""
    return sum(q.get_attr("TCA_STATS2").get_attr("TCA_STATS_BASIC")["bytes"]
               for q in lab["client"].ipr.get_qdiscs() if q.get_attr("TCA_KIND") == "tbf")


def bench_bulk(seconds: float, mtu: int | None) -> None:
    with Lab(catalogue.get("two-paths", mtu=mtu)) as lab:
        client, server = lab["client"], lab["server"]
        lst = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen()
        received = [0]
        marks: list[tuple[float, int]] = []

        def serve() -> None:
            conn, _ = lst.accept()
            while (n := len(conn.recv(1 << 20))):
                received[0] += n
            conn.close()

        th = threading.Thread(target=serve)
        th.start()
        sock = client.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.connect(("10.0.1.2", 5000))
        buf = b"\0" * (1 << 20)
        start = time.perf_counter()
        warm = 1.0  # slow start and the join: measure after the first second
        while (now := time.perf_counter()) - start < seconds + warm:
            sock.sendall(buf)
            if not marks and now - start >= warm:
                marks.append((now, received[0], tx_bytes(lab)))
        marks.append((time.perf_counter(), received[0], tx_bytes(lab)))
        joins = (lab["server"].counters())["MPTcpExtMPJoinAckRx"]
        sock.close()
        th.join()
        lst.close()
    (t0, b0, w0), (t1, b1, w1) = marks
    mbps = (b1 - b0) * 8 / (t1 - t0) / 1e6
    wire = (w1 - w0) * 8 / (t1 - t0) / 1e6
    print(f"kernel MPTCP bulk upload, two 100 Mbit/s paths, MTU {mtu or 1500}, {seconds:g} s "
          f"after 1 s warm-up (subflows joined: {joins}):")
    print(f"  goodput (bytes the server application read) {mbps:6.1f} Mbit/s = "
          f"{mbps / 2:.1f}% of 200 Mbit/s")
    print(f"  on the wire (frames through the shapers)   {wire:6.1f} Mbit/s = "
          f"{wire / 2:.1f}% of 200 Mbit/s (payload share of the frames: "
          f"{100 * (b1 - b0) / (w1 - w0):.1f}%)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-bulk", action="store_true")
    ap.add_argument("--mtu", type=int, action="append",
                    help="MTU of the two paths for the bulk run (repeatable; default 1500 "
                         "and 9000)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_topo needs root (network namespaces)", file=sys.stderr)
        return 4
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")
    bench_up_down(args.rounds)
    if not args.skip_bulk:
        for mtu in args.mtu or [1500, 9000]:
            bench_bulk(args.seconds, None if mtu == 1500 else mtu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
