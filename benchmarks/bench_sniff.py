"""How fast is `mptcplab sniff`, side by side with tshark on the same capture, in one run?

    python3 benchmarks/bench_sniff.py [CAPTURE] [--repeat N]     # offline
    python3 benchmarks/bench_sniff.py --live SECONDS [--repeat N] [--rates LIST] [--modes=LIST]
                                      [--snaplen N] [--nice N]   # live, in labs (root)

Without CAPTURE (as root) it first records one: a kernel MPTCP bulk transfer over two paths in a
lab topology, segmentation offloads off, headers only (tools/make_captures.py --bulk).

Offline, for each tool, the best of N runs (interleaved, so a noisy machine hurts all alike):
  * tshark:        tshark -r F -Y mptcp -T fields -e tcp.options.mptcp.subtype > /dev/null
  * sniff summary: mptcplab sniff -r F --summary > /dev/null      (decode + track + validate)
  * sniff json:    mptcplab sniff -r F --json > FILE
each as a whole command (what a user waits for), and the same minus the tool's own start-up
(the command on a one-packet copy of F: tshark loads its dissectors, Python its modules),
which is the rate a long capture sees. Then the sniffer's loop in this process (no start-up).
The package is byte-compiled first, as an installed one is (with PYTHONDONTWRITEBYTECODE set,
as on the lab's build machine, every run would otherwise compile it again).

Live: for each mode (--json, --summary, --summary --json), a lab with two links tbf-shaped to
each rate of --rates in turn (Mbit/s per link, 0 unshaped), offloads off, a bulk upload of
SECONDS while `mptcplab sniff any -n CLIENT-NS MODE tcp port 5001` runs in the client's
namespace; the rate from the client's interface counters, the drops from the kernel's capture
ring (tcpdump's counters), the CPU the sniffer and tcpdump used from /proc. Stepping stops at
the first rate with drops (--every-step goes on); the last table is, per mode and run, the
highest rate held with 0 kernel drops.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIFF = [sys.executable, "-m", "mptcplab.cli", "sniff"]


def timed(argv: list[str], stdout: object = subprocess.DEVNULL) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of a command. On a shared machine the CPU
    time is the steadier figure: waiting for a CPU inflates only the wall clock."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"bench_sniff: {' '.join(argv)} failed ({status})")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def first_packet_copy(capture: str, path: Path) -> None:
    """A pcap holding only the capture's first record (to time start-up alone)."""
    from mptcplab.capture import PcapWriter, iter_file

    for _, t, linktype, data, wirelen in iter_file(capture):
        writer = PcapWriter(path)
        writer.write(t, linktype, data, wirelen)
        writer.close()
        return


def byte_compile() -> None:
    import compileall

    compileall.compile_dir(str(ROOT / "mptcplab"), quiet=1)


def offline(capture: str, repeat: int) -> None:
    from mptcplab.capture import iter_file
    from mptcplab.sniff import JsonEmitter, new_tracker, pump

    byte_compile()
    packets = sum(1 for _ in iter_file(capture))
    tracker = new_tracker()
    pump(iter_file(capture), tracker)
    print(f"capture {capture}: {packets} packets, {tracker.mptcp_packets} with MPTCP options, "
          f"{len(tracker.connections)} connection(s), "
          f"{sum(len(c.subflows) for c in tracker.connections)} subflows")
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-"))
    one = tmp / "one.pcap"
    first_packet_copy(capture, one)
    json_out = tmp / "out.json"
    tshark = shutil.which("tshark")
    commands = {
        "sniff --summary": (SNIFF + ["-r", capture, "--summary"],
                            SNIFF + ["-r", str(one), "--summary"], None),
        "sniff --json": (SNIFF + ["-r", capture, "--json"],
                         SNIFF + ["-r", str(one), "--json"], json_out),
    }
    if tshark:
        fields = ["-Y", "mptcp", "-T", "fields", "-e", "tcp.options.mptcp.subtype"]
        commands = {"tshark": ([tshark, "-r", capture, *fields],
                               [tshark, "-r", str(one), *fields], None), **commands}
    else:
        print("tshark not found (Debian package tshark): no comparison")
    # best (wall, CPU) of the whole command and of its start-up alone
    best = {k: [1e9, 1e9, 1e9, 1e9] for k in commands}
    for _ in range(repeat):
        for name, (full, start_only, out) in commands.items():
            if out is not None:
                with open(out, "w") as f:
                    whole = timed(full, f)
            else:
                whole = timed(full)
            start = timed(start_only)
            b = best[name]
            best[name] = [min(b[0], whole[0]), min(b[1], start[0]),
                          min(b[2], whole[1]), min(b[3], start[1])]

    print(f"\nbest of {repeat} runs, {packets} packets; wall clock, then CPU time:")
    print(f"{'command':22s} {'whole s':>8s} {'start-up s':>10s} {'pkts/s':>10s} "
          f"{'pkts/s w/o start-up':>20s} {'x tshark':>9s} {'x w/o start-up':>15s}")
    for column, label in ((0, "wall"), (2, "CPU")):
        def rates(name: str, column: int = column) -> tuple[float, float]:
            t_full, t_start = best[name][column], best[name][column + 1]
            return packets / t_full, packets / max(t_full - t_start, 1e-9)

        ref = rates("tshark") if "tshark" in best else None
        for name in best:
            whole, steady = rates(name)
            ratio = f"{whole / ref[0]:9.1f} {steady / ref[1]:15.1f}" if ref else ""
            print(f"{name + ' (' + label + ')':22s} {best[name][column]:8.3f} "
                  f"{best[name][column + 1]:10.3f} {whole:10.0f} {steady:20.0f} {ratio}")

    # the loop alone, in this process
    records = list(iter_file(capture))
    for label, make in (("pump --summary", lambda tr: None),
                        ("pump --json", lambda tr: JsonEmitter(tr, io.StringIO().write))):
        times = []
        for _ in range(max(3, repeat)):
            tracker = new_tracker()
            emitter = make(tracker)
            start = time.perf_counter()
            pump(iter(records), tracker, emitter)
            if emitter is not None:
                emitter.close()
            times.append(time.perf_counter() - start)
        print(f"{label:22s} in-process, records already read: "
              f"{len(records) / min(times):10.0f} packets/s")
    shutil.rmtree(tmp, ignore_errors=True)


MODES = {"--json": ["--json"], "--summary": ["--summary"],
         "--summary --json": ["--summary", "--json"]}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (tcpdump is started from a thread that
    entered the namespace)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def live_step(rate_mbit: int, mode: list[str], seconds: float, snaplen: int | None,
              out: Path, nice: int = 0) -> dict[str, float]:
    """One bulk upload through a lab with both links shaped to ``rate_mbit`` (0: unshaped),
    sniffed in the client's namespace; the rate from the client's interface counters, the drops
    from tcpdump's counters (the JSON summary, or the sniffer's last stderr line)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from make_captures import (
        PORT,
        Server,
        client_socket,
        offloads_off,
        subflows,
        two_paths,
        wait_for,
    )

    from mptcplab.topo import Lab

    def link_packets(lab: Lab) -> int:
        total = 0
        for link in lab["client"].ipr.get_links():
            if link.get_attr("IFLA_IFNAME").startswith("eth"):
                st = link.get_attr("IFLA_STATS64")
                total += st["rx_packets"] + st["tx_packets"]
        return total

    rate = f"{rate_mbit}mbit" if rate_mbit else None
    with Lab(two_paths(rate=rate)) as lab:
        offloads_off(lab)
        with out.open("w") as f:
            argv = [*SNIFF, "any", "-n", lab["client"].netns, *mode]
            if nice:
                argv = ["nice", "-n", str(nice), *argv]
            if snaplen:
                argv += ["-s", str(snaplen)]
            proc = subprocess.Popen([*argv, "tcp", "port", str(PORT)], stdout=f,
                                    stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            proc.stderr.readline()          # "capturing on ...": tcpdump listens
            tcpdump = next(iter(_children(proc.pid)), None)
            server = Server(lab, socket.AF_INET)
            cli = client_socket(lab, socket.AF_INET)
            before, start = link_packets(lab), time.monotonic()
            cpu0 = (_cpu_seconds(proc.pid), _cpu_seconds(tcpdump) if tcpdump else 0.0)
            cli.connect(("10.0.1.2", PORT))
            wait_for(lambda: subflows(lab) >= 1, what="the second subflow")
            chunk = b"\0" * 65536
            while time.monotonic() - start < seconds:
                cli.sendall(chunk)
            cli.shutdown(socket.SHUT_WR)
            server.close()
            cli.close()
            elapsed, sent = time.monotonic() - start, link_packets(lab) - before
            time.sleep(0.2)
            cpu1 = (_cpu_seconds(proc.pid), _cpu_seconds(tcpdump) if tcpdump else 0.0)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=300)
    if "--summary" in mode and "--json" in mode:
        with out.open() as f:
            counters = json.loads(f.read())["capture"]
    else:                   # "mptcplab: N packets captured, N received by filter, ..."
        counters = {"captured": _count(err, "packets captured"),
                    "dropped_by_kernel": _count(err, "dropped by kernel")}
    return {"rate": rate_mbit, "seconds": elapsed, "packets": sent, "pps": sent / elapsed,
            "captured": counters.get("captured") or -1,
            "dropped": -1 if counters.get("dropped_by_kernel") is None
            else counters["dropped_by_kernel"],
            "sniff_cpu": (cpu1[0] - cpu0[0]) / elapsed,
            "tcpdump_cpu": (cpu1[1] - cpu0[1]) / elapsed}


def _count(text: str, what: str) -> int | None:
    found = re.findall(r"(\d+) " + what, text)
    return int(found[-1]) if found else None


def live(seconds: float, repeat: int, rates: list[int], modes: list[str],
         snaplen: int | None, every_step: bool, nice: int = 0) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-"))
    held: dict[str, list[float]] = {m: [] for m in modes}
    print(f"live: {seconds:g} s bulk uploads over two paths, tbf-shaped (Mbit/s per link, "
          f"0 = unshaped), snaplen {snaplen or 'default'}, nice {nice}; CPU used by the sniffer and by "
          "tcpdump, in cores and in microseconds per packet captured")
    print(f"{'mode':17s} {'Mbit/s':>6s} {'seconds':>7s} {'link pkts':>9s} {'pkts/s':>8s} "
          f"{'captured':>9s} {'dropped':>8s} {'sniff cpu':>9s} {'us/pkt':>6s} "
          f"{'tcpdump cpu':>11s} {'us/pkt':>6s}")
    for _ in range(repeat):
        for name in modes:
            best = 0.0
            for rate in rates:
                r = live_step(rate, MODES[name], seconds, snaplen, tmp / "live.out", nice)
                per = r["seconds"] * 1e6 / max(1, r["captured"])
                print(f"{name:17s} {r['rate']:6d} {r['seconds']:7.2f} {r['packets']:9d} "
                      f"{r['pps']:8.0f} {r['captured']:9d} {r['dropped']:8d} "
                      f"{r['sniff_cpu']:9.2f} {r['sniff_cpu'] * per:6.1f} "
                      f"{r['tcpdump_cpu']:11.2f} {r['tcpdump_cpu'] * per:6.1f}", flush=True)
                if r["dropped"] == 0:
                    best = max(best, r["pps"])
                elif not every_step:
                    break
            held[name].append(best)
    print("\nhighest rate held with 0 kernel drops, per run (packets/s):")
    for name, values in held.items():
        print(f"{name:17s} " + "  ".join(f"{v:8.0f}" for v in values)
              + f"   best {max(values):8.0f}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", help="pcap/pcapng (default: record one)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (best is kept)")
    parser.add_argument("--live", type=float, metavar="SECONDS",
                        help="measure live capture during bulk transfers instead (root)")
    parser.add_argument("--rates", default="100,200,300,400,600,800,1000,1300,0",
                        help="--live: tbf rates to step through, Mbit/s per link, ascending "
                             "(0: unshaped); default %(default)s")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="--live: sniffer modes, comma-separated; default %(default)s")
    parser.add_argument("--snaplen", type=int, default=None,
                        help="--live: the sniffer's -s (default: its own default)")
    parser.add_argument("--every-step", action="store_true",
                        help="--live: go on stepping after a step with drops")
    parser.add_argument("--nice", type=int, default=0,
                        help="--live: run the sniffer (and its tcpdump) at this nice value "
                             "(a negative one gives it precedence on a shared machine)")
    args = parser.parse_args()
    if args.live:
        if os.geteuid() != 0:
            print("bench_sniff: --live needs root (network namespaces)", file=sys.stderr)
            return 4
        live(args.live, args.repeat, [int(r) for r in args.rates.split(",")],
             args.modes.split(","), args.snaplen, args.every_step, args.nice)
        return 0
    capture = args.capture
    if capture is None:
        if os.geteuid() != 0:
            print("bench_sniff: give a CAPTURE, or run as root to record one", file=sys.stderr)
            return 4
        capture = str(Path(tempfile.mkdtemp(prefix="mptcplab-bench-")) / "bulk.pcap")
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_captures.py"), "--bulk",
                        capture], check=True)
    offline(capture, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
