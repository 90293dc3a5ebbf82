"""The full kernel x case matrix and its wall time per kernel: every conformance case on each
kernel given (default: host, 6.12, 6.1), one kernel at a time, through `mptcplab cases`.

    sudo python3 benchmarks/bench_vm.py [--kernel host --kernel 6.12 ...] [--out DIR]

Prints, per kernel: how it ran (natively / TCG / KVM), the boot, the whole run, the cases'
counts; then the matrix itself. Figures depend on the machine's load (TCG is CPU-bound): the
load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", default=[],
                    help="a kernel as `mptcplab cases --kernel` takes it (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mptcplab-bench-vm"))
    ap.add_argument("--workers", default="2", help="pytest -n inside each run (default 2)")
    ap.add_argument("-k", dest="select", help="only these cases (pytest -k)")
    args = ap.parse_args()
    kernels = args.kernel or ["host", "6.12", "6.1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()
    cmd = [sys.executable, "-m", "mptcplab.cli", "cases", "--jobs", "1", "--out", str(args.out),
           "-n", args.workers, "--json"]
    for k in kernels:
        cmd += ["--kernel", k]
    if args.select:
        cmd += ["-k", args.select]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    sys.stderr.write(proc.stderr)
    if not proc.stdout.strip():
        print(f"mptcplab cases printed nothing (exit {proc.returncode})")
        return 1
    m = json.loads(proc.stdout)
    print(f"{len(m['cases'])} cases x {len(kernels)} kernels in {wall:.0f} s wall "
          f"(exit {proc.returncode}); load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs")
    for k in m["kernels"]:
        c = k.get("counts", {})
        boot = f"boot {k['boot_seconds']:.0f} s, " if k.get("boot_seconds") else ""
        print(f"  {k['label']:>6}  {k['release']:<24} {k.get('accel') or '-':<6} "
              f"{boot}{k.get('seconds') or 0:.0f} s in all; " +
              ", ".join(f"{n} {r}" for r, n in c.items() if n) + (f"; NOT RUN: {k['error']}"
                                                                   if k.get("error") else ""))
    print()
    text = subprocess.run([sys.executable, "-m", "mptcplab.cli", "cases", "--merge",
                           *[str(args.out / f"{k['label']}.json") for k in m["kernels"]
                             if (args.out / f"{k['label']}.json").exists()]],
                          cwd=ROOT, env=env, capture_output=True, text=True).stdout
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
