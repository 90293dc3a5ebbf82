"""How fast do the MPTCP layers dissect a real capture?

    python3 benchmarks/bench_layers.py [CAPTURE]

Without CAPTURE (as root) it first records one: a kernel MPTCP bulk transfer over the two-path
lab topology, headers only, until at least 100k MPTCP packets (tools/make_captures.py --bulk).

It prints packets per second for four ways through the same file:
  * scapy+layers: Scapy dissects each frame (Ether/IP/TCP) and the hook decodes kind 30;
  * layers only:  the fast path cuts out the option bytes, then ``MPTCPOption(raw).as_dict()``;
  * fast decode:  mptcplab.decode's struct path, frame to Segment with option dicts (the same
                  dicts as the layers give; the tests cross-check them);
  * read only:    the capture reader alone (the floor under any decoder).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mptcplab.capture import read_records, scapy_packet
from mptcplab.decode import segment_from_frame
from mptcplab.layers import MPTCPOption, mptcp_options

ROOT = Path(__file__).resolve().parents[1]
SCAPY_SAMPLE = 20_000


def _option_bytes(records: list) -> list[bytes]:
    """The kind-30 option bytes of each frame, cut out ahead of the timed loop."""
    from mptcplab.wire import option_spans

    out = []
    for rec in records:
        pkt = scapy_packet(rec)
        tcp = pkt.getlayer("TCP")
        raw = bytes(tcp)[20:tcp.dataofs * 4]
        out += [span for span in option_spans(raw) if span[0] == 30]
    return out


def rate(label: str, count: int, seconds: float, options: int) -> None:
    print(f"{label:14s} {count:8d} packets {options:8d} MPTCP options in {seconds:6.2f} s "
          f"= {count / seconds:9.0f} packets/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", help="pcap/pcapng (default: record one)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N packets")
    args = parser.parse_args()

    capture = args.capture
    if capture is None:
        tmp = tempfile.mkdtemp(prefix="mptcplab-bench-")
        capture = str(Path(tmp) / "bulk.pcap")
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_captures.py"), "--bulk",
                        capture], check=True)

    records = list(read_records(capture))
    if args.limit:
        records = records[:args.limit]
    segments = {r.index: segment_from_frame(r.data, r.linktype, r.index, r.time)
                for r in records}
    mptcp_frames = [r for r in records if segments[r.index] and segments[r.index].options]
    print(f"capture {capture}: {len(records)} packets, {len(mptcp_frames)} with MPTCP options")

    start = time.perf_counter()
    n = sum(1 for _ in read_records(capture))
    rate("read only", n, time.perf_counter() - start, 0)

    start = time.perf_counter()
    n_opts = 0
    for rec in mptcp_frames:
        seg = segment_from_frame(rec.data, rec.linktype, rec.index, rec.time)
        n_opts += len(seg.options)
    rate("fast decode", len(mptcp_frames), time.perf_counter() - start, n_opts)

    sample = mptcp_frames[:SCAPY_SAMPLE]   # Scapy's paths are slow: time them on a sample
    spans = _option_bytes(sample)
    start = time.perf_counter()
    for raw in spans:
        MPTCPOption(raw).as_dict()
    rate("layers only", len(sample), time.perf_counter() - start, len(spans))

    start = time.perf_counter()
    n_opts = 0
    for rec in sample:
        for opt in mptcp_options(scapy_packet(rec).getlayer("TCP")):
            opt.as_dict()
            n_opts += 1
    rate("scapy+layers", len(sample), time.perf_counter() - start, n_opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
