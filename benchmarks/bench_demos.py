"""Demo benchmarks (root): how long each demo takes, end to end, as `mptcplab demo NAME` runs
it (a fresh Python process: imports, lab, traffic, capture, analysis, ladder SVG and PNG,
plots, files). Prints figures, asserts nothing.

    sudo python3 benchmarks/bench_demos.py [--rounds 3] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from mptcplab.demo import entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="demos to time (default: all but tours)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    names = args.names or [n for n, e in entries().items() if not e.sequence]
    print(f"{'demo':<11}{'median':>9}{'min':>9}{'max':>9}  claims  in the demo's own run()")
    for name in names:
        walls, inner, ok = [], [], True
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as out:
                t = time.monotonic()
                res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "demo", name, "-o",
                                      out, "--json"], capture_output=True, text=True)
                walls.append(time.monotonic() - t)
                result = json.loads(res.stdout.splitlines()[-1]) if res.stdout else {}
                ok = ok and res.returncode == 0 and result.get("ok", False)
                inner.append(result.get("seconds", float("nan")))
        print(f"{name:<11}{statistics.median(walls):>8.1f}s{min(walls):>8.1f}s"
              f"{max(walls):>8.1f}s  {'held' if ok else 'FAILED':<6}  "
              f"{statistics.median(inner):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
