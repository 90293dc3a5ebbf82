"""The struct layouts and the decoding by length, without a kernel: offsets from the uapi
headers (include/uapi/linux/mptcp.h and tcp.h, Linux 6.18), truncated answers from older
kernels, sockaddr decoding."""

from __future__ import annotations

import socket
import struct

import pytest

from mptcplab.sockopt import MptcpInfo, SubflowAddrs, TcpInfo, sockaddr_from_bytes


def offset(cls, name: str) -> int:
    return getattr(cls._c, name).offset


@pytest.mark.parametrize(("name", "off"), [
    ("mptcpi_subflows", 0), ("mptcpi_add_addr_accepted_max", 5), ("mptcpi_flags", 8),
    ("mptcpi_token", 12), ("mptcpi_write_seq", 16), ("mptcpi_rcv_nxt", 32),
    ("mptcpi_local_addr_used", 40), ("mptcpi_csum_enabled", 42), ("mptcpi_retransmits", 44),
    ("mptcpi_bytes_retrans", 48), ("mptcpi_bytes_acked", 72), ("mptcpi_subflows_total", 80),
    ("mptcpi_endp_laminar_max", 81), ("mptcpi_last_data_sent", 84),
    ("mptcpi_last_ack_recv", 92)])
def test_mptcp_info_layout(name, off):
    # the two holes the header mentions ("16-bit hole", "8-bit hole") come from alignment
    assert offset(MptcpInfo, name) == off
    assert MptcpInfo.size() == 96


@pytest.mark.parametrize(("name", "off"), [
    ("tcpi_options", 5), ("tcpi_rto", 8), ("tcpi_last_data_sent", 44), ("tcpi_rtt", 68),
    ("tcpi_snd_cwnd", 80), ("tcpi_total_retrans", 100), ("tcpi_pacing_rate", 104),
    ("tcpi_bytes_received", 128), ("tcpi_segs_out", 136), ("tcpi_delivery_rate", 160),
    ("tcpi_delivered", 192), ("tcpi_bytes_sent", 200), ("tcpi_snd_wnd", 228),
    ("tcpi_total_rto", 240), ("tcpi_total_rto_time", 244), ("tcpi_received_ce", 248),
    ("tcpi_received_ce_bytes", 272), ("tcpi_accecn_fail_mode", 276),
    ("tcpi_accecn_opt_seen", 278)])
def test_tcp_info_layout(name, off):
    assert offset(TcpInfo, name) == off
    assert TcpInfo.size() == 280


def test_tcp_info_bit_fields():
    raw = bytes([1, 0, 0, 0, 0, 0b111, 0xA7, 0b101]) + bytes(272)
    t = TcpInfo.from_bytes(raw)
    # low nibble first: snd_wscale 7, rcv_wscale 10; app_limited bit 0, fastopen bits 1-2
    assert (t.tcpi_snd_wscale, t.tcpi_rcv_wscale) == (7, 10)
    assert (t.tcpi_delivery_rate_app_limited, t.tcpi_fastopen_client_fail) == (1, 2)
    assert t.state == "ESTABLISHED" and t.options == ["ts", "sack", "wscale"]


def test_an_older_kernel_sends_less_and_the_rest_is_none():
    # A 5.x kernel's struct mptcp_info ended after mptcpi_rcv_nxt (40 bytes).
    full = struct.pack("=BBBBBBxxIIQQQBBBxIQQQQBBBBIII", 1, 2, 3, 4, 5, 6, 7, 0xABCD, 100,
                       200, 300, 8, 9, 1, 10, 11, 12, 13, 14, 2, 0, 0, 0, 15, 16, 17)
    assert len(full) == 96
    whole = MptcpInfo.from_bytes(full)
    assert whole.mptcpi_bytes_acked == 14 and whole.mptcpi_last_ack_recv == 17
    old = MptcpInfo.from_bytes(full[:40])
    assert old.kernel_len == 40
    assert (old.mptcpi_token, old.mptcpi_rcv_nxt) == (0xABCD, 300)
    assert old.mptcpi_local_addr_used is None and old.mptcpi_bytes_sent is None
    assert "mptcpi_bytes_sent" not in old.as_dict() and old.as_dict()["mptcpi_flags"] == 7
    # A field cut in the middle is not half-read.
    assert MptcpInfo.from_bytes(full[:20]).mptcpi_write_seq is None
    # tcp_info before tcpi_bytes_sent existed (4.18 and older stopped at 192).
    t = TcpInfo.from_bytes(bytes(192))
    assert t.tcpi_sndbuf_limited == 0 and t.tcpi_delivered is None


def test_a_newer_kernel_sends_more_and_the_rest_is_ignored():
    t = TcpInfo.from_bytes(bytes(280) + b"\xff" * 40)
    assert t.kernel_len == 320 and t.tcpi_accecn_opt_seen == 0


def test_sockaddrs():
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 5000) + bytes([10, 0, 2, 1])
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + bytes(4) \
        + socket.inet_pton(socket.AF_INET6, "dead:beef:2::1") + bytes(4)
    a = SubflowAddrs.from_bytes(v4.ljust(128, b"\0") + v6.ljust(128, b"\0"))
    assert str(a.local) == "10.0.2.1:5000" and str(a.remote) == "[dead:beef:2::1]:443"
    assert a.as_dict() == {"local": {"addr": "10.0.2.1", "port": 5000},
                           "remote": {"addr": "dead:beef:2::1", "port": 443}}
    assert sockaddr_from_bytes(bytes(128)) is None          # AF_UNSPEC
    assert sockaddr_from_bytes(v6[:10]) is None             # cut short


@pytest.mark.parametrize("cls", [MptcpInfo, TcpInfo])
def test_the_fast_path_reads_what_ctypes_reads(cls):
    """A whole struct is unpacked in one go; it must agree with the member-by-member ctypes
    decoding (which handles shorter structs) on every member, bit fields included."""
    import random

    rng = random.Random(7)
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(cls.size()))
        assert cls.from_bytes(raw) == cls._from_partial(raw)
