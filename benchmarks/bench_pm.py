"""Path-manager daemon benchmark (root): prints figures, asserts nothing.

The real thing, `mptcplab pm daemon --policy subflows 2` on the client of a fresh two-paths lab
(no shaping), is offered new MPTCP connections at a fixed rate for a few seconds; each
connection sends one byte (a client is fully established only once the server acknowledged
data) and stays open until the round ends. Per offered rate it reports:

- connections opened per second (what the generator achieved) and how many of them ended with
  their second subflow, counted from sock_diag at the end (not from the daemon's log);
- the delay to SUBFLOW_CREATE: from the daemon reading CREATED to the kernel acknowledging
  SUBFLOW_CREATE (`since_created_ms` in its log), and end to end, from connect() returning in
  the generator to that acknowledgement (percentiles);
- the daemon's CPU use (its CPU time over the round, from the first connection until the last
  one had its subflow) and the event overflows (ENOBUFS) it met and repaired.

A last round gives the daemon a tiny event buffer so that it overflows: every connection must
still get its subflow, through the resync from sock_diag.

    sudo python3 benchmarks/bench_pm.py [--rates 100,200,400,800,1600] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time

from mptcplab import namespaces
from mptcplab import sockdiag
from mptcplab.topo import IPPROTO_MPTCP, SOL_MPTCP, Lab, catalogue


def topology():
    topo = catalogue.get("two-paths", rate=None)
    topo.nodes["server"].endpoints.clear()
    topo.nodes["server"].set_limits(subflows=8, add_addr_accepted=8)
    return topo


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def one_round(rate: int, seconds: float, rcvbuf: int | None = None) -> dict:
    with Lab(topology()) as lab:
        client, server = lab["client"], lab["server"]
        cmd = [sys.executable, "-m", "mptcplab.cli", "pm", "daemon", "--json", "-n",
               f"{lab.id}:client", "--policy", "subflows", "2"]
        if os.environ.get("BENCH_PM_PROFILE"):          # cProfile the daemon into this file
            cmd[1:3] = ["-m", "cProfile", "-o", os.environ["BENCH_PM_PROFILE"], "-m",
                        "mptcplab.cli"]
        if rcvbuf:
            cmd[6:6] = ["--rcvbuf", str(rcvbuf)]
        daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        records: list[dict] = []
        started = threading.Event()

        def read() -> None:
            assert daemon.stdout is not None
            for line in daemon.stdout:
                rec = json.loads(line)
                records.append(rec)
                if rec["action"] == "start":
                    started.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if not started.wait(60):
            daemon.kill()
            raise SystemExit("the daemon did not start")
        lst = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.bind(("0.0.0.0", 5000))
        lst.listen(4096)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            lst.settimeout(0.2)
            while not stop.is_set():
                try:
                    s, _ = lst.accept()
                except TimeoutError:
                    continue
                s.recv(1)
                accepted.append(s)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        # the client's sockets are opened from a thread inside its namespace
        opened: list[tuple[socket.socket, float]] = []
        cpu0 = cpu_seconds(daemon.pid)

        def generate() -> None:
            t0 = time.monotonic()
            # two descriptors per connection (client and server ends) stay open
            n = min(int(rate * seconds), (fd_limit() - 500) // 2)
            for i in range(n):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
                s.connect(("10.0.1.2", 5000))
                opened.append((s, time.time()))
                s.send(b"x")

        t_start = time.monotonic()
        namespaces.run(client.fd, generate)
        elapsed = time.monotonic() - t_start
        tokens = {struct.unpack_from("=I", s.getsockopt(SOL_MPTCP, 1, 48), 12)[0]: t
                  for s, t in opened}
        # wait until every connection has its 2 subflows (or 30 s pass)
        deadline = time.monotonic() + 30
        while True:
            subs = sockdiag.subflows(client.fd)
            per = {}
            for sf in subs:
                if sf.state == sockdiag.TCP_ESTABLISHED:
                    per[sf.token_loc] = per.get(sf.token_loc, 0) + 1
            served = sum(1 for t in tokens if per.get(t, 0) >= 2)
            if served == len(tokens) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        busy = time.monotonic() - t_start          # generation plus the wait for stragglers
        last = busy - elapsed                      # the last one served, after generation
        cpu = cpu_seconds(daemon.pid) - cpu0
        daemon.send_signal(2)           # SIGINT: a clean stop (the profiler writes its file)
        daemon.wait(30)
        reader.join(5)
        stop.set()
        acceptor.join(5)
        for s, _ in opened:
            s.close()
        for s in accepted:
            s.close()
        lst.close()
    creates = {r["token"]: r for r in records
               if r["action"] == "subflow_create" and r.get("ok")}
    inner = [r["since_created_ms"] for r in creates.values()
             if r.get("since_created_ms") is not None]
    outer = [(creates[t]["time"] - when) * 1e3 for t, when in tokens.items() if t in creates]
    stop_rec = next((r for r in records if r["action"] == "stop"), {})
    if os.environ.get("BENCH_PM_DEBUG"):
        missing = [t for t in tokens if per.get(t, 0) < 2]
        with open(os.environ["BENCH_PM_DEBUG"], "w") as f:
            json.dump({"missing": missing, "per": {str(k): v for k, v in per.items()},
                       "records": records}, f)
    return {"rate": rate, "opened": len(tokens), "achieved": len(tokens) / elapsed,
            "served": served, "last": last, "inner": inner, "outer": outer, "cpu": cpu / busy,
            "enobufs": stop_rec.get("enobufs", 0), "resyncs": stop_rec.get("resyncs", 0),
            "learned": stop_rec.get("learned", 0), "failed": stop_rec.get("errors", 0)}


def show(rows: list[dict]) -> None:
    print(f"{'offered/s':>9} {'opened/s':>9} {'served':>13} {'backlog s':>9} "
          f"{'CREATED->SUBFLOW_CREATE ms':>27} {'connect->SUBFLOW_CREATE ms':>30} "
          f"{'daemon CPU':>10} {'ENOBUFS':>7} {'resyncs':>7}")
    print(f"{'':>9} {'':>9} {'':>13} {'':>9} {'p50 / p90 / p99':>27} {'p50 / p90 / p99':>30}")
    for r in rows:
        inner = " / ".join(f"{pct(r['inner'], p):.2f}" for p in (50, 90, 99))
        outer = " / ".join(f"{pct(r['outer'], p):.1f}" for p in (50, 90, 99))
        print(f"{r['rate']:>9} {r['achieved']:>9.0f} {r['served']:>6}/{r['opened']:<6} "
              f"{r['last']:>9.1f} {inner:>27} {outer:>30} {r['cpu'] * 100:>9.0f}% "
              f"{r['enobufs']:>7} {r['resyncs']:>7}")
    print("(backlog: seconds after the last connection opened until every one had its "
          "subflow, as sock_diag saw it, polled every 0.1 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,200,400,800,1600",
                    help="offered connections per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each round")
    ap.add_argument("--overflow-rate", type=int, default=800,
                    help="rate of the round with a tiny event buffer (0: skip it)")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"two-paths lab, daemon `subflows 2` on the client, {args.seconds:g} s per round; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at start\n")
    rates = [int(r) for r in args.rates.split(",")]
    most = max(rates) * args.seconds
    if most > (fd_limit() - 500) // 2:
        print(f"(at most {(fd_limit() - 500) // 2} connections per round: the limit of open "
              f"files is {fd_limit()})\n")
    rows = [one_round(r, args.seconds) for r in rates]
    show(rows)
    if args.overflow_rate:
        print(f"\nthe same at {args.overflow_rate}/s with a 4 KiB event buffer "
              "(--rcvbuf 4096): the daemon must overflow and resync")
        show([one_round(args.overflow_rate, args.seconds, rcvbuf=4096)])
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
