"""The struct decoder against the reference (Scapy + MPTCP layers): same segments, same fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from mptcplab.capture import LINKTYPE_ETHERNET, LINKTYPE_RAW
from mptcplab.decode import decode_file, decode_option, segment_from_frame, segment_from_scapy
from mptcplab.layers import MPTCPOption

from capture_paths import OTHERS, OWN, SHARED

CAPTURES = OWN + OTHERS


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_fast_path_equals_reference_on_every_capture(path: Path) -> None:
    fast = list(decode_file(str(path), mptcp_only=False))
    slow = list(decode_file(str(path), mptcp_only=False, fast=False))
    assert len(fast) == len(slow)
    assert sum(len(s.options) for s in fast) > 0
    for a, b in zip(fast, slow):
        assert a == b, f"frame {a.frame}: fast {a.as_dict()} != reference {b.as_dict()}"


def test_shared_captures_are_there_or_skipped() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: only the lab's own captures were cross-checked")
    assert len(OTHERS) == 9


@settings(max_examples=600, deadline=None)
@given(st.binary(min_size=0, max_size=44))
def test_decode_option_equals_as_dict_on_any_bytes(data: bytes) -> None:
    raw = b"\x1e" + data
    assert decode_option(raw) == MPTCPOption(raw).as_dict()


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=37))
def test_decode_option_equals_as_dict_for_every_subtype(subtype: int, nibble: int,
                                                        rest: bytes) -> None:
    """Length byte equal to the bytes present: shape checks decide, not truncation."""
    raw = bytes([30, len(rest) + 3, subtype << 4 | nibble]) + rest
    assert decode_option(raw) == MPTCPOption(raw).as_dict()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 0x1FF), st.booleans(), st.binary(max_size=30))
def test_frames_decode_the_same_both_ways(options: bytes, flags: int, v6: bool,
                                          payload: bytes) -> None:
    options += b"\x00" * (-len(options) % 4)
    tcp = TCP(sport=1234, dport=80, seq=7, ack=9, flags=flags, dataofs=5 + len(options) // 4)
    wire = bytes(tcp)[:20] + options + payload
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2", nh=6) if v6 else \
        IP(src="10.0.0.1", dst="10.0.0.2", proto=6)
    ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no MAC look-up
    for frame, linktype in ((bytes(ether / ip / wire), LINKTYPE_ETHERNET),
                            (bytes(ip / wire), LINKTYPE_RAW)):
        fast = segment_from_frame(frame, linktype, 1, 0.0)
        ref = segment_from_scapy(Ether(frame) if linktype == LINKTYPE_ETHERNET else
                                 (IPv6(frame) if v6 else IP(frame)), 1)
        assert fast is not None and ref is not None
        ref.time = 0.0
        assert fast == ref


def test_non_tcp_and_short_frames_are_none() -> None:
    assert segment_from_frame(b"\x45" + b"\0" * 5, LINKTYPE_RAW, 1, 0.0) is None
    udp = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / (b"\0" * 8))
    assert segment_from_frame(udp, LINKTYPE_RAW, 1, 0.0) is None
    assert segment_from_frame(b"\xff" * 60, LINKTYPE_ETHERNET, 1, 0.0) is None


def test_the_sniffer_starts_without_loading_scapy() -> None:
    """The fast path needs only the wire format: Scapy's ~0.3 s import stays out of the
    sniffer's start-up (it counts against every short capture)."""
    import subprocess
    import sys

    code = "import sys, mptcplab.sniff, mptcplab.decode; print('scapy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
