"""The conformance cases as a whole (root): how many, how long, which are slowest. Prints
figures, asserts nothing.

    sudo python benchmarks/bench_cases.py [--workers 2] [--rounds 1] [-- extra pytest args]

Runs `python -m pytest -n WORKERS cases/` with a JUnit file and reads each case's time
(setup + call + teardown) from it. The wall-clock total is the run's, pytest start-up included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(workers: int, extra: list[str]) -> tuple[float, list[tuple[str, float, str]], int]:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "cases.xml"
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               "-n", str(workers), "cases/", f"--junitxml={junit}", *extra]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        cases: list[tuple[str, float, str]] = []
        if junit.exists():
            for tc in ET.parse(junit).getroot().iter("testcase"):
                result = "passed"
                for child in tc:
                    if child.tag in ("failure", "error"):
                        result = "FAILED"
                    elif child.tag == "skipped":
                        result = "xfail" if child.get("type") == "pytest.xfail" else "skipped"
                cases.append((tc.get("name", "?"), float(tc.get("time", 0)), result))
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return wall, cases, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_cases: needs root (the cases build network namespaces)", file=sys.stderr)
        return 4
    for r in range(args.rounds):
        wall, cases, code = run_once(args.workers, args.extra)
        counts: dict[str, int] = {}
        for _, _, result in cases:
            counts[result] = counts.get(result, 0) + 1
        print(f"round {r + 1}: {len(cases)} cases in {wall:.1f} s wall with -n {args.workers} "
              f"(pytest exit {code}; " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
              + f"); sum of case times {sum(t for _, t, _ in cases):.1f} s")
        for name, _, result in cases:
            if result == "FAILED":
                print(f"  FAILED: {name}")
        print("slowest ten:")
        for name, seconds, result in sorted(cases, key=lambda c: -c[1])[:10]:
            print(f"  {seconds:6.2f} s  {name}  ({result})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
