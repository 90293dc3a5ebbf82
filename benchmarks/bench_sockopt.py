"""Socket-API benchmarks (root): print figures, assert nothing.

1. The cost of one read of each MPTCP socket option through mptcplab.sockopt (typed, by
   length), beside Python's own socket.getsockopt(SOL_MPTCP, MPTCP_INFO) returning raw bytes,
   and a sock_diag dump of the namespace (mptcplab.sockdiag), on a live two-subflow connection.
2. `mptcplab nc` moving a file between two lab hosts over two paths without rate limits (the
   veths' own speed): MB/s end to end (process start-up included), with and without
   --subflows sampling every 0.1 s, beside two sockets of one process moving the same bytes.

    sudo python benchmarks/bench_sockopt.py [--reads 20000] [--megabytes 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mptcplab import sockdiag, sockopt, traffic
from mptcplab.poll import until
from mptcplab.topo import Lab, catalogue


def per_call(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def bench_reads(reads: int) -> None:
    with Lab(catalogue.get("two-paths", rate=None)) as lab, \
            traffic.connect(lab["client"], lab["server"], "10.0.1.2", port=5900) as conn:
        conn.upload(traffic.pattern(1_000_000))
        until(lambda: len(sockopt.subflow_addrs(conn.client)) >= 2, "the second subflow",
              timeout=10)
        s = conn.client
        token = sockopt.mptcp_info(s).mptcpi_token
        fd = sockdiag.netns_of(s)
        diag = sockdiag.SockDiag(fd)
        sub = sockopt.full_info(s).subflows[1]
        rows = [
            ("socket.getsockopt(SOL_MPTCP, MPTCP_INFO, 96): raw bytes",
             lambda: s.getsockopt(sockopt.SOL_MPTCP, sockopt.MPTCP_INFO, 96)),
            ("sockopt.mptcp_info: MptcpInfo", lambda: sockopt.mptcp_info(s)),
            ("sockopt.tcp_infos: 2 x TcpInfo", lambda: sockopt.tcp_infos(s)),
            ("sockopt.subflow_addrs: 2 x SubflowAddrs", lambda: sockopt.subflow_addrs(s)),
            ("sockopt.full_info: ids, addresses, 2 x TcpInfo, MptcpInfo",
             lambda: sockopt.full_info(s)),
            ("SockDiag.subflow(local, remote): one inet_diag lookup",
             lambda: diag.subflow(sub.local, sub.remote)),
            ("SockDiag.subflows(token): inet_diag dump, both families",
             lambda: diag.subflows(token)),
            ("sockdiag.subflows(netns_fd, token): the same, entering the netns",
             lambda: sockdiag.subflows(fd, token)),
        ]
        print(f"one read on a live 2-subflow connection ({reads} reads each)")
        print(f"{'call':64} {'us/call':>9}")
        for name, fn in rows:
            n = reads if "diag" not in name.lower() else max(200, reads // 20)
            print(f"{name:64} {per_call(fn, n):9.1f}")
        diag.close()
        os.close(fd)


def nc_run(lab, path: str, size: int, extra: list[str]) -> float:
    cli = [sys.executable, "-m", "mptcplab.cli", "nc"]
    t = time.perf_counter()
    server = subprocess.Popen(cli + ["-n", f"{lab.id}:server", "-l", "-v", "--recv-only",
                                     "5901"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server.stderr.readline()
    with open(path, "rb") as src:
        subprocess.run(cli + ["-n", f"{lab.id}:client", *extra, "10.0.1.2", "5901"],
                       stdin=src, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
    server.wait(60)
    return size / (time.perf_counter() - t) / 1e6


def in_process(lab, size: int) -> float:
    """The same bytes between two sockets of this process (no nc, no files): the ceiling."""
    import threading

    chunk = bytes(1 << 20)
    with traffic.connect(lab["client"], lab["server"], "10.0.1.2", port=5902) as conn:
        got = []
        reader = threading.Thread(target=lambda: got.append(len(traffic.recv_exactly(
            conn.server, size))))
        t = time.perf_counter()
        reader.start()
        left = size
        while left > 0:
            n = min(left, len(chunk))
            conn.client.sendall(chunk[:n])
            left -= n
        reader.join()
        return size / (time.perf_counter() - t) / 1e6


def bench_nc(megabytes: int, rounds: int) -> None:
    size = megabytes * 1_000_000
    with tempfile.NamedTemporaryFile(prefix="bench-nc-") as f:
        chunk = os.urandom(1 << 20)
        written = 0
        while written < size:
            f.write(chunk[:size - written])
            written += min(len(chunk), size - written)
        f.flush()
        with Lab(catalogue.get("two-paths", rate=None)) as lab:
            print(f"\nmptcplab nc, {megabytes} MB over two unlimited veth paths, {rounds} rounds "
                  "(process start-up included)")
            rates = [in_process(lab, size) for _ in range(rounds)]
            print(f"  {'baseline: in-process sockets':28} median {statistics.median(rates):7.1f} "
                  f"MB/s  (min {min(rates):.1f}, max {max(rates):.1f})")
            for label, extra in (("plain", []), ("--subflows --interval 0.1",
                                                 ["--subflows", "--interval", "0.1"])):
                rates = [nc_run(lab, f.name, size, extra) for _ in range(rounds)]
                print(f"  {label:28} median {statistics.median(rates):7.1f} MB/s  "
                      f"(min {min(rates):.1f}, max {max(rates):.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--megabytes", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench_reads(args.reads)
    bench_nc(args.megabytes, args.rounds)


if __name__ == "__main__":
    main()
