"""How fast do the MPTCP layers dissect a real capture?

    python3 benchmarks/bench_layers.py [CAPTURE]

Without CAPTURE (as root) it first records one: a kernel MPTCP bulk transfer over the two-path
lab topology, headers only, until at least 100k MPTCP packets (tools/make_captures.py --bulk).

It prints packets per second for three ways through the same file:
  * scapy+layers: Scapy dissects each frame (Ether/IP/TCP) and the hook decodes kind 30;
  * layers only:  the option bytes are cut out with struct, then ``MPTCPOption(raw).as_dict()``;
  * read only:    the capture reader alone (the floor under any decoder).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mptcplab.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_PPP,
    read_records,
    scapy_packet,
)
from mptcplab.layers import MPTCPOption, mptcp_options

ROOT = Path(__file__).resolve().parents[1]


def tcp_options(record_data: bytes, linktype: int) -> bytes | None:
    """The TCP options area of an Ethernet / cooked / raw IPv4 or IPv6 frame (struct only)."""
    data = record_data
    offset = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype, 0)
    if linktype == LINKTYPE_PPP:
        offset = 4 if data[:2] == b"\xff\x03" else 2
    if len(data) < offset + 20:
        return None
    version = data[offset] >> 4
    if version == 4:
        if data[offset + 9] != 6:
            return None
        tcp = offset + (data[offset] & 0x0F) * 4
    elif version == 6:
        if data[offset + 6] != 6:
            return None
        tcp = offset + 40
    else:
        return None
    if len(data) < tcp + 20:
        return None
    doff = (data[tcp + 12] >> 4) * 4
    return data[tcp + 20:tcp + doff]


def option_spans(opts: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(opts):
        kind = opts[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        length = opts[pos + 1] if pos + 1 < len(opts) else 2
        if kind == 30:
            out.append(opts[pos:pos + max(length, 2)])
        pos += max(length, 2)
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
    mptcp_frames = [r for r in records
                    if option_spans(tcp_options(r.data, r.linktype) or b"")]
    print(f"capture {capture}: {len(records)} packets, {len(mptcp_frames)} with MPTCP options")

    start = time.perf_counter()
    n = sum(1 for _ in read_records(capture))
    rate("read only", n, time.perf_counter() - start, 0)

    start = time.perf_counter()
    n_opts = 0
    for rec in mptcp_frames:
        for raw in option_spans(tcp_options(rec.data, rec.linktype) or b""):
            MPTCPOption(raw).as_dict()
            n_opts += 1
    rate("layers only", len(mptcp_frames), time.perf_counter() - start, n_opts)

    start = time.perf_counter()
    n_opts = 0
    from scapy.layers.inet import TCP
    for rec in mptcp_frames:
        pkt = scapy_packet(rec)
        tcp = pkt.getlayer(TCP)
        for opt in mptcp_options(tcp):
            opt.as_dict()
            n_opts += 1
    rate("scapy+layers", len(mptcp_frames), time.perf_counter() - start, n_opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
