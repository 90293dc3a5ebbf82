"""`mptcplab decode` as a user runs it: a fresh process each time."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from capture_paths import OWN


def decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", "decode", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_layers_and_fast_path_print_the_same_lines_from_the_first_frame(path: Path) -> None:
    slow, fast = decode(str(path)), decode("--fast", str(path))
    assert slow.returncode == fast.returncode == 0
    assert slow.stdout == fast.stdout
    first = slow.stdout.splitlines()[0]
    assert first.split()[0] == "1" and "MP_CAPABLE v1 SYN" in first


def _pcap(frames: list[bytes], linktype: int = 1) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for frame in frames:
        out += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    return out


def test_frames_too_short_for_their_headers_do_not_stop_the_decode(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    path.write_bytes(_pcap([b"\x00", b"\x00" * 13]))     # shorter than an Ethernet header
    res = decode(str(path), "--all")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_a_pcapng_block_too_short_for_its_type_is_a_one_line_error(tmp_path: Path) -> None:
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    shb = struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body + \
        struct.pack("<I", 12 + len(shb_body))
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 65535) + struct.pack("<I", 20)
    epb = struct.pack("<III", 6, 16, 0) + struct.pack("<I", 16)      # body of 4 bytes, not 20
    path = tmp_path / "bad.pcapng"
    path.write_bytes(shb + idb + epb)
    res = decode(str(path))
    assert res.returncode == 3
    assert res.stderr.count("\n") == 1 and "too short for its type" in res.stderr
