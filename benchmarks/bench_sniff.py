"""How fast is `mptcplab sniff`, side by side with tshark on the same capture, in one run?

    python3 benchmarks/bench_sniff.py [CAPTURE] [--repeat N]     # offline
    python3 benchmarks/bench_sniff.py --live SECONDS [--repeat N]  # live, in a lab (root)

Without CAPTURE (as root) it first records one: a kernel MPTCP bulk transfer over two paths in a
lab topology, segmentation offloads off, headers only (tools/make_captures.py --bulk).

Offline, for each tool, the best of N runs (interleaved, so a noisy machine hurts all alike):
  * tshark:        tshark -r F -Y mptcp -T fields -e tcp.options.mptcp.subtype > /dev/null
  * sniff summary: mptcplab sniff -r F --summary > /dev/null      (decode + track + validate)
  * sniff json:    mptcplab sniff -r F --json > FILE
each as a whole command (what a user waits for), and the same minus the tool's own start-up
(the command on a one-packet copy of F: tshark loads its dissectors, Python imports Scapy),
which is the rate a long capture sees. Then the sniffer's loop in this process (no start-up).

Live: a lab with two unshaped paths and offloads off; `mptcplab sniff any -n CLIENT-NS -s 128`
(with --summary --json, then with --json to a file) runs during a bulk upload of SECONDS; the
rate is read from the client's interface counters, the drops from the kernel's capture ring
(tcpdump's statistics).
"""

from __future__ import annotations

import argparse
import io
import os
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


def wall(argv: list[str], stdout: object = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=stdout, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def first_packet_copy(capture: str, path: Path) -> None:
    """A pcap holding only the capture's first record (to time start-up alone)."""
    from mptcplab.capture import PcapWriter, iter_file

    for _, t, linktype, data, wirelen in iter_file(capture):
        writer = PcapWriter(path)
        writer.write(t, linktype, data, wirelen)
        writer.close()
        return


def offline(capture: str, repeat: int) -> None:
    from mptcplab.capture import iter_file
    from mptcplab.sniff import JsonEmitter, new_tracker, pump

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
    best: dict[str, tuple[float, float]] = {k: (1e9, 1e9) for k in commands}
    for _ in range(repeat):
        for name, (full, start_only, out) in commands.items():
            if out is not None:
                with open(out, "w") as f:
                    t_full = wall(full, f)
            else:
                t_full = wall(full)
            t_start = wall(start_only)
            best[name] = (min(best[name][0], t_full), min(best[name][1], t_start))

    def rates(name: str) -> tuple[float, float]:
        t_full, t_start = best[name]
        return packets / t_full, packets / max(t_full - t_start, 1e-9)

    print(f"\nbest of {repeat} runs, {packets} packets:")
    print(f"{'command':16s} {'whole s':>8s} {'start-up s':>10s} {'pkts/s':>10s} "
          f"{'pkts/s w/o start-up':>20s} {'x tshark':>9s} {'x w/o start-up':>15s}")
    ref = rates("tshark") if "tshark" in best else None
    for name in best:
        whole, steady = rates(name)
        ratio = f"{whole / ref[0]:9.1f} {steady / ref[1]:15.1f}" if ref else ""
        print(f"{name:16s} {best[name][0]:8.3f} {best[name][1]:10.3f} {whole:10.0f} "
              f"{steady:20.0f} {ratio}")

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
        print(f"{label:16s} in-process, records already read: "
              f"{len(records) / min(times):10.0f} packets/s")
    shutil.rmtree(tmp, ignore_errors=True)


def live(seconds: float, repeat: int) -> None:
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

    tmp = Path(tempfile.mkdtemp(prefix="mptcplab-bench-"))
    print(f"{'mode':22s} {'seconds':>7s} {'link pkts':>10s} {'pkts/s':>8s} {'captured':>9s} "
          f"{'dropped by kernel':>17s} {'unread at stop':>14s}")
    for _ in range(repeat):
        for mode in (["--summary", "--json"], ["--json"]):
            with Lab(two_paths()) as lab:
                offloads_off(lab)
                out = tmp / "live.json"
                with out.open("w") as f:
                    proc = subprocess.Popen(
                        SNIFF + ["any", "-n", lab["client"].netns, "-s", "128", *mode,
                                 "tcp", "port", str(PORT)],
                        stdout=f, stderr=subprocess.PIPE, text=True)
                    assert proc.stderr is not None
                    proc.stderr.readline()          # "capturing on ...": tcpdump listens
                    server = Server(lab, socket.AF_INET)
                    cli = client_socket(lab, socket.AF_INET)
                    before, start = link_packets(lab), time.monotonic()
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
                    proc.send_signal(signal.SIGINT)
                    _, err = proc.communicate(timeout=120)
            stats = err.strip().splitlines()[-1]
            numbers = {w: int(n) for n, w in _stat_pairs(stats)}
            print(f"{' '.join(mode):22s} {elapsed:7.2f} {sent:10d} {sent / elapsed:8.0f} "
                  f"{numbers.get('captured', -1):9d} {numbers.get('dropped by kernel', -1):17d} "
                  f"{numbers.get('unread', 0):14d}")
    shutil.rmtree(tmp, ignore_errors=True)


def _stat_pairs(line: str) -> list[tuple[str, str]]:
    out = []
    for part in line.removeprefix("mptcplab: ").split(", "):
        number, _, what = part.partition(" ")
        what = {"packets captured": "captured"}.get(what, what)
        if what.startswith("left unread"):
            what = "unread"
        out.append((number, what))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", help="pcap/pcapng (default: record one)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each (best is kept)")
    parser.add_argument("--live", type=float, metavar="SECONDS",
                        help="measure live capture during a bulk transfer instead (root)")
    args = parser.parse_args()
    if args.live:
        if os.geteuid() != 0:
            print("bench_sniff: --live needs root (network namespaces)", file=sys.stderr)
            return 4
        live(args.live, args.repeat)
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
