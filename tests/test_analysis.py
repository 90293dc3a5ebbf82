"""Connections, subflows and verdicts from captures (mptcplab.analysis), and the sniffer's fast
path held to the reference path on every capture and on generated traffic."""

from __future__ import annotations

import contextlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mptcplab import crypto
from mptcplab.analysis import MappingCheck, Tally, Tracker
from mptcplab.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    iter_file,
)
from mptcplab.report import summary_json
from mptcplab.sniff import JsonEmitter, TextEmitter, new_tracker, pump

from capture_paths import DATA, OTHERS, OWN, SHARED, needs_shared



def track(path: Path | str, fast: bool = True) -> Tracker:
    tracker = new_tracker()
    pump(iter_file(path), tracker, fast=fast)
    tracker.finish()
    return tracker


def json_run(records: Any, fast: bool) -> tuple[list[str], Tracker]:
    tracker = new_tracker()
    out = io.StringIO()
    emitter = JsonEmitter(tracker, out.write)
    pump(records, tracker, emitter, fast=fast)
    emitter.close()
    return out.getvalue().splitlines(), tracker


def only_connection(tracker: Tracker) -> dict[str, Any]:
    (conn,) = summary_json(tracker)["connections"]
    return conn


# ---------------------------------------------------------------------------------------------
# Values others computed (the captures' README)


@needs_shared
@pytest.mark.parametrize("name, client, server, joins", [
    ("iperf-mptcp-0-0.pcap",
     (15630232866698755056, 176983692, 9485794687403768073),
     (15504481981035106882, 809210772, 15754397863267795546), 3),
    ("neohapsis_mptcp_challenge.pcapng",
     (15575993726135858763, 582664408, 9421743343812542473),
     (6557139672172610608, 983887070, 15478127853382442285), 8),
])
def test_v0_captures_group_every_join_under_the_token_of_its_connection(
        name: str, client: tuple[int, int, int], server: tuple[int, int, int],
        joins: int) -> None:
    conn = only_connection(track(SHARED / name))
    assert conn["version"] == 0
    assert (conn["client_key"], conn["client_token"], conn["client_idsn"]) == client
    assert (conn["server_key"], conn["server_token"], conn["server_idsn"]) == server
    subflows = conn["subflows"]
    assert [s["subflow"] for s in subflows] == list(range(1, joins + 2))
    # the joins come from other ports (and, in iperf, other addresses) than the first subflow
    assert len({(s["src"], s["sport"], s["dst"], s["dport"]) for s in subflows}) == joins + 1
    assert conn["checksum"] is True and conn["fallback"] is False


@needs_shared
def test_iperf_join_hmacs_are_the_ones_the_readme_computed() -> None:
    lines, _ = json_run(iter_file(SHARED / "iperf-mptcp-0-0.pcap"), fast=True)
    joins = [(p, o) for p in map(json.loads, lines) for o in p["options"]
             if o["subtype"] == "MP_JOIN"]
    synack = [o for _, o in joins if o.get("nonce") == 2696637541]
    ack = [o for _, o in joins if o.get("hmac") == "825aadbb1222dd68b5352bf31ff13fe7f3d1e499"]
    assert [o["truncated_hmac"] for o in synack] == [7061322843868767095]
    assert synack[0]["hmac_valid"] is True and ack[0]["hmac_valid"] is True
    # the two joins that were never answered: SYNs only, subflows that carried nothing
    conn = only_connection(track(SHARED / "iperf-mptcp-0-0.pcap"))
    carried = [s["bytes_to_server"] > 0 for s in conn["subflows"]]
    assert carried == [True, False, True, False]


@needs_shared
def test_neohapsis_join_hmacs_validate_including_the_readme_ones() -> None:
    lines, tracker = json_run(iter_file(SHARED / "neohapsis_mptcp_challenge.pcapng"), fast=True)
    verdicts = [o["hmac_valid"] for p in map(json.loads, lines) for o in p["options"]
                if o["subtype"] == "MP_JOIN" and o["length"] in (16, 24)]
    assert len(verdicts) >= 16 and all(v is True for v in verdicts)
    hmacs = {o.get("truncated_hmac") or o.get("hmac") for p in map(json.loads, lines)
             for o in p["options"] if o["subtype"] == "MP_JOIN"}
    assert {17190590715112771084, "0000eabe3c46e1b8481af4b85ad7589805e27a01"} <= hmacs
    assert tracker.hmacs.invalid == 0


@needs_shared
def test_v1_capture_keys_tokens_idsns_and_the_first_data_mapping() -> None:
    tracker = track(SHARED / "mptcp-v1.pcap")
    conn = only_connection(tracker)
    assert conn["version"] == 1
    assert (conn["server_key"], conn["server_token"], conn["server_idsn"]) == (
        0x29a6c86981ad933c, 0xa35d6d82, 11713449205243392241)
    assert (conn["client_key"], conn["client_token"], conn["client_idsn"]) == (
        0x1fdb5df328bc3def, 0x239fbdb0, 14413541604287230029)
    # 8192 bytes each way, the first 8192 of the client's mapped by MP_CAPABLE (length 22)
    (sub,) = conn["subflows"]
    assert (sub["bytes_to_server"], sub["bytes_to_client"]) == (10268, 10268)
    assert conn["fallback"] is False


@needs_shared
def test_add_addr_hmac_of_the_2020_kernel_is_invalid() -> None:
    """mptcp-aa-v1: the leftmost 64 bits were sent, RFC 8684 wants the rightmost."""
    lines, tracker = json_run(iter_file(SHARED / "mptcp-aa-v1.pcap"), fast=True)
    (ann,) = [o for p in map(json.loads, lines) for o in p["options"]
              if o["subtype"] == "ADD_ADDR"]
    assert ann["hmac"] == 0x669928744366716c
    assert ann["hmac_valid"] is False
    assert tracker.hmacs.as_tuple() == (0, 1, 0)
    conn = only_connection(tracker)
    assert crypto.add_addr_hmac(conn["server_key"], conn["client_key"], 1,
                                "192.168.136.225") == 0xe0e054c3444e4c25


@needs_shared
def test_add_addr_without_the_handshake_cannot_be_checked() -> None:
    lines, tracker = json_run(iter_file(SHARED / "mptcp-aa-echo.pcap"), fast=True)
    opts = [o for p in map(json.loads, lines) for o in p["options"] if o["subtype"] == "ADD_ADDR"]
    assert [(o["echo"], o["hmac_valid"]) for o in opts] == [(False, None), (True, None)]
    assert [json.loads(x)["connection"] for x in lines] == [None, None]
    assert tracker.connections == [] and len(tracker.orphans) == 2


@needs_shared
def test_v0_dss_checksums_verify_and_mp_fastclose_is_seen() -> None:
    tracker = track(SHARED / "mptcp-v0.pcap")
    valid, invalid, unchecked = tracker.checksums.as_tuple()
    assert valid > 100 and invalid == 0 and unchecked == 0
    fclose = track(SHARED / "mptcp-fclose.pcap")
    assert fclose.connections[0].fastclose
    assert fclose.checksums.as_tuple() == (2, 0, 0)


# ---------------------------------------------------------------------------------------------
# The lab's own kernel captures


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.stem)
def test_kernel_capture_two_subflows_joined_by_token_hmacs_valid(path: Path) -> None:
    meta = json.loads(path.with_suffix(".json").read_text())
    tracker = track(path)
    conn = only_connection(tracker)
    assert conn["version"] == 1
    assert conn["server_token"] == crypto.key_token(conn["server_key"])
    assert conn["client_idsn"] == crypto.key_idsn(conn["client_key"])
    assert conn["checksum"] is meta["checksum"]
    first, second = conn["subflows"]
    assert (first["dst"], first["dport"]) == (meta["server"], meta["port"])
    assert second["dst"] == meta["announced"]
    assert second["dport"] == meta.get("announced_port", meta["port"])
    if "bytes_sent" in meta:
        assert first["bytes_to_server"] + second["bytes_to_server"] == meta["bytes_sent"]
    # SYN-ACK and ACK of the join, and the ADD_ADDR: all verify
    assert tracker.hmacs.as_tuple() == (3, 0, 0)
    announced = [a for a in tracker.connections[0].add_addrs if not a["echo"]]
    assert [(a["addr"], a["side"], a["hmac_valid"]) for a in announced] == [
        (meta["announced"], 1, True)]
    if meta["checksum"]:
        valid, invalid, unchecked = tracker.checksums.as_tuple()
        assert valid >= 2 and invalid == 0 and unchecked == 0


def test_path_manager_signals_reach_the_summary() -> None:
    tracker = track(DATA / "kernel-v1-pm.pcap")
    conn = tracker.connections[0]
    first, second = conn.subflows
    assert second.is_backup() is True and first.is_backup() is False
    assert [r["addr_ids"] for r in conn.remove_addrs] == [[2]]
    assert conn.fastclose and first.reset == "Unspecified error"


def _corrupt(src: Path, dst: Path, frame: int, find: bytes, flip_at: int = 0) -> None:
    """Copy a pcap, flipping one bit in frame `frame` at the first occurrence of `find`."""
    records = list(iter_file(src))
    raw = bytearray(src.read_bytes())
    pos = 24
    for index, _, _, data, _ in records:
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        if index == frame:
            at = data.index(find) + flip_at
            raw[pos + 16 + at] ^= 0x01
        pos += 16 + caplen
    dst.write_bytes(bytes(raw))


def test_a_flipped_payload_bit_fails_only_its_mapping(tmp_path: Path) -> None:
    src = DATA / "kernel-v1-csum.pcap"
    lines, _ = json_run(iter_file(src), fast=True)
    packets = [json.loads(x) for x in lines]
    data_frame = next(p["frame"] for p in packets if p["payload_len"] > 1000
                      and any(o.get("checksum_valid") for o in p["options"]))
    payload = next(d for i, _, _, d, _ in iter_file(src) if i == data_frame)[-100:]
    _corrupt(src, tmp_path / "bad.pcap", data_frame, payload, 50)
    tracker = track(tmp_path / "bad.pcap")
    valid, invalid, unchecked = tracker.checksums.as_tuple()
    assert invalid == 1 and valid >= 1 and unchecked == 0


def test_a_flipped_join_hmac_bit_is_reported_invalid(tmp_path: Path) -> None:
    src = DATA / "kernel-v1-join.pcap"
    lines, _ = json_run(iter_file(src), fast=True)
    ack = next(p for p in map(json.loads, lines) for o in p["options"]
               if o["subtype"] == "MP_JOIN" and o["length"] == 24)
    hmac = bytes.fromhex(ack["options"][0]["hmac"])
    _corrupt(src, tmp_path / "bad.pcap", ack["frame"], hmac, 19)
    tracker = track(tmp_path / "bad.pcap")
    assert tracker.hmacs.as_tuple() == (2, 1, 0)


# ---------------------------------------------------------------------------------------------
# DSS checksums over mappings that span segments


def _mapping(payload: bytes, dsn: int = 1000, ssn: int = 1) -> tuple[MappingCheck, int]:
    checksum = crypto.dss_checksum(dsn, ssn, len(payload), payload)
    tally = Tally()
    return MappingCheck(dsn, ssn, len(payload), checksum, len(payload), 1, tally), checksum


def test_mapping_checked_once_all_its_segments_arrived_in_any_order() -> None:
    payload = bytes(range(256)) * 12
    check, _ = _mapping(payload)
    pieces = [(1 + i, payload[i:i + 1000]) for i in range(0, len(payload), 1000)]
    for rel, chunk in reversed(pieces[1:]):
        check.add(rel, chunk, len(chunk))
        assert not check.done
    check.add(*pieces[0], len(pieces[0][1]))
    assert check.done and check.result is True


def test_mapping_ignores_bytes_outside_it_and_overlaps() -> None:
    payload = b"x" * 500 + b"y" * 500
    check, _ = _mapping(payload, ssn=101)
    check.add(1, b"z" * 150, 150)              # ends 50 bytes into the mapping
    check.add(151, payload[50:700], 650)       # overlaps nothing outside
    check.add(601, payload[500:] + b"tail", 504)
    assert check.result is False               # the first 50 bytes came from "z"s
    check2, _ = _mapping(payload, ssn=101)
    check2.add(1, b"z" * 100 + payload[:600], 700)
    check2.add(701, payload[600:] + b"next mapping", 412)
    assert check2.done and check2.result is True


def test_mapping_cut_by_the_snap_length_cannot_be_checked() -> None:
    payload = b"a" * 1000
    check, _ = _mapping(payload)
    check.add(1, payload[:96], 1000)
    assert check.done and check.result is None


# ---------------------------------------------------------------------------------------------
# The fast path against the reference path


@pytest.mark.parametrize("path", OWN + OTHERS, ids=lambda p: p.name)
def test_fast_path_gives_the_reference_json_and_summary(path: Path) -> None:
    fast_lines, fast = json_run(iter_file(path), fast=True)
    ref_lines, ref = json_run(iter_file(path), fast=False)
    assert fast_lines == ref_lines
    assert summary_json(fast) == summary_json(ref) == summary_json(track(path))
    assert fast.hmacs.as_tuple() == ref.hmacs.as_tuple()
    assert fast.checksums.as_tuple() == ref.checksums.as_tuple()
    assert ref.fast_mptcp_packets == 0


def test_fast_path_carries_the_plain_dss_traffic_of_a_kernel_capture() -> None:
    tracker = track(DATA / "kernel-v1-join.pcap")
    assert tracker.fast_mptcp_packets >= tracker.mptcp_packets // 3


# Generated traffic: a v1 handshake and a join with real keys, then segments with random
# flags, payloads and options (well-formed, odd and malformed), framed four ways.

KEY_C, KEY_S = 0x1122334455667788, 0x99AABBCCDDEEFF00
IPV4 = ("10.0.1.1", "10.0.1.2")


def _ip4(src: str, dst: str, tcp: bytes, options: bytes, uncaptured: int) -> bytes:
    """An IPv4 packet whose length counts `uncaptured` bytes beyond `tcp` (the snap length)."""
    import socket as s

    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(tcp) + uncaptured, 1,
                       0x4000, 64, 6, 0, s.inet_aton(src), s.inet_aton(dst)) + options + tcp


def _ip6(src: str, dst: str, tcp: bytes, uncaptured: int) -> bytes:
    import socket as s

    return struct.pack("!IHBB16s16s", 0x60000000, len(tcp) + uncaptured, 6, 64,
                       s.inet_pton(s.AF_INET6, src), s.inet_pton(s.AF_INET6, dst)) + tcp


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, options: bytes,
         payload: bytes) -> bytes:
    options += b"\x00" * (-len(options) % 4)
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack,
                       (5 + len(options) // 4) << 12 | flags, 502, 0, 0) + options + payload


def _dss(flags: int, ack: int, dsn: int, ssn: int, dll: int, checksum: int | None) -> bytes:
    body = b""
    if flags & 1:
        body += (ack & (2**64 - 1 if flags & 2 else 2**32 - 1)).to_bytes(8 if flags & 2 else 4, "big")
    if flags & 4:
        body += ((dsn & (2**64 - 1 if flags & 8 else 2**32 - 1)).to_bytes(8 if flags & 8 else 4, "big")
                 + ssn.to_bytes(4, "big")
                 + dll.to_bytes(2, "big"))
        if checksum is not None:
            body += checksum.to_bytes(2, "big")
    return bytes([30, 4 + len(body), 0x20, flags]) + body


TS = b"\x01\x01\x08\x0a" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02"
option_strategy = st.one_of(
    st.builds(_dss, st.integers(0, 31), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
              st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 1424, 31328]),
              st.sampled_from([None, None, 0, 0xBEEF])),
    st.sampled_from([
        bytes([30, 12, 0x01, 0x81]) + KEY_C.to_bytes(8, "big"),                  # MP_CAPABLE
        bytes([30, 20, 0x01, 0x01]) + KEY_C.to_bytes(8, "big") + KEY_S.to_bytes(8, "big"),
        bytes([30, 16, 0x30, 2, 10, 0, 2, 2]) + (7).to_bytes(8, "big"),          # ADD_ADDR
        bytes([30, 8, 0x31, 2, 10, 0, 2, 2]),                                   # its echo
        bytes([30, 4, 0x40, 2]), bytes([30, 3, 0x51]),                          # RM, MP_PRIO
        bytes([30, 12, 0x70, 0]) + KEY_S.to_bytes(8, "big"),                    # FASTCLOSE
        bytes([30, 4, 0x80, 5]), bytes([30, 3, 0x20]), bytes([30, 2]),          # odd ones
        bytes([30, 40, 0x20, 0]), b"\x01\x01\x01\x01", b"\x00\x00\x00\x00",
        bytes([30, 24, 0x10, 0]) + b"\x11" * 20,                                # join ACK
    ]),
)
plain_dss_strategy = st.builds(      # what the fast path takes: no checksum, no DATA_FIN
    _dss, st.sampled_from([0, 1, 3, 4, 5, 7, 8, 12, 13, 15]), st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.sampled_from([1, 1424, 31328]),
    st.none())
segment_strategy = st.tuples(
    st.integers(0, 3),                                 # flow
    st.sampled_from([0x10, 0x18, 0x10, 0x18, 0x11, 0x14, 0x02, 0x12]),     # TCP flags
    st.integers(0, 2**32 - 1), st.integers(0, 3000),  # seq offset, ack
    st.one_of(st.lists(plain_dss_strategy, min_size=1, max_size=1),
              st.lists(option_strategy, max_size=3)),
    st.booleans(),                                    # timestamps first
    st.binary(max_size=64), st.integers(0, 1500),    # captured payload, claimed extra
    st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW]),
    st.sampled_from(["pad", "flush", "cut"]),         # how the options area ends
)


def _options_end(options: bytes, how: str) -> bytes:
    """The options area (a multiple of 4 bytes) ending three ways: padded with EOL, the last
    option flush against the header's end (NOPs in front), or cut by the data offset."""
    options = options[:40]
    if how == "flush":
        return (b"\x01" * (-len(options) % 4) + options)[-40:]
    if how == "cut":
        return options[:len(options) // 4 * 4]
    return options + b"\x00" * (-len(options) % 4)


def _handshake() -> list[tuple[int, tuple[str, str], int, int, int, bytes, bytes]]:
    """A v1 connection and a join to it, with real keys, nonces and HMACs."""
    token = crypto.key_token(KEY_S)
    r_a, r_b = 0x01020304, 0x05060708
    synack_hmac = crypto.join_synack_hmac(KEY_S, KEY_C, r_b, r_a)
    ack_hmac = crypto.join_ack_hmac(KEY_C, KEY_S, r_a, r_b)
    c, s2 = IPV4, ("10.0.2.1", "10.0.2.2")
    return [
        (0, c, 0x02, 1000, 0, bytes([30, 4, 0x01, 0x01]), b""),
        (1, c, 0x12, 5000, 1001, bytes([30, 12, 0x01, 0x01]) + KEY_S.to_bytes(8, "big"), b""),
        (0, c, 0x10, 1001, 5001, bytes([30, 20, 0x01, 0x01]) + KEY_C.to_bytes(8, "big")
         + KEY_S.to_bytes(8, "big"), b""),
        (2, s2, 0x02, 7000, 0, bytes([30, 12, 0x10, 1]) + token.to_bytes(4, "big")
         + r_a.to_bytes(4, "big"), b""),
        (3, s2, 0x12, 9000, 7001, bytes([30, 16, 0x10, 2]) + synack_hmac.to_bytes(8, "big")
         + r_b.to_bytes(4, "big"), b""),
        (2, s2, 0x10, 7001, 9001, bytes([30, 24, 0x10, 0]) + ack_hmac, b""),
    ]


def _frame(linktype: int, ip: bytes) -> bytes:
    if linktype == LINKTYPE_ETHERNET:
        return b"\x02" * 12 + (b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00") + ip
    if linktype == LINKTYPE_LINUX_SLL2:
        return (b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00") + b"\x00" * 18 + ip
    return ip


def _records(segments: list[Any], v6: bool, ip_options: bool) -> list[Any]:
    """(flow, addresses, flags, seq, ack, options, payload, uncaptured, link type) -> records."""
    flows = {0: (1111, 5001), 1: (5001, 1111), 2: (2222, 5001), 3: (5001, 2222)}
    v6_addrs = {IPV4: ("2001:db8:1::1", "2001:db8:1::2"),
                ("10.0.2.1", "10.0.2.2"): ("2001:db8:2::1", "2001:db8:2::2")}
    out = []
    for i, (flow, addrs, flags, seq, ack, options, payload, uncaptured,
            linktype) in enumerate(segments):
        sport, dport = flows[flow]
        src, dst = addrs if flow in (0, 2) else addrs[::-1]
        tcp = _tcp(sport, dport, seq, ack, flags, options, payload)
        if v6:
            a, b = v6_addrs[addrs] if flow in (0, 2) else v6_addrs[addrs][::-1]
            ip = _ip6(a, b, tcp, uncaptured)
        else:
            ip = _ip4(src, dst, tcp, b"\x01\x01\x01\x00" if ip_options else b"", uncaptured)
        frame = _frame(linktype, ip)
        out.append((i + 1, 0.5 * i, linktype, frame, len(frame) + uncaptured))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(segment_strategy, max_size=40), st.booleans(), st.booleans())
@example([(0, 0x10, 0, 5001, [bytes([30, 3, 0x20])], False, b"", 0, LINKTYPE_RAW, "flush")],
         False, False)        # issue 8: a 3-byte DSS at the very end of the frame
@example([(1, 0x18, 0, 1001, [_dss(0x05, 1, 2, 3, 100, None)], True, b"x" * 9, 0,
           LINKTYPE_ETHERNET, "cut")], True, False)   # a mapping cut by the data offset
def test_fast_path_equals_reference_on_generated_traffic(segs: list[Any], v6: bool,
                                                         ip_options: bool) -> None:
    script = [(f, a, fl, sq, ak, o, p, 0, LINKTYPE_LINUX_SLL2)
              for f, a, fl, sq, ak, o, p in _handshake()]
    base = {0: 1001, 1: 5001, 2: 7001, 3: 9001}
    for flow, flags, seq_off, ack, options, ts, payload, extra, linktype, end in segs:
        addrs = IPV4 if flow < 2 else ("10.0.2.1", "10.0.2.2")
        opts = _options_end((TS if ts else b"") + b"".join(options), end)
        seq = (base[flow] + seq_off % 5000) & 0xFFFFFFFF
        script.append((flow, addrs, flags, seq, ack, opts, payload, extra % 3 * extra,
                       linktype))
    records = _records(script, v6, ip_options)
    fast_lines, fast = json_run(iter(records), fast=True)
    ref_lines, ref = json_run(iter(records), fast=False)
    assert fast_lines == ref_lines
    assert summary_json(fast) == summary_json(ref)
    assert (fast.hmacs.as_tuple(), fast.checksums.as_tuple()) == (
        ref.hmacs.as_tuple(), ref.checksums.as_tuple())
    text = io.StringIO()
    tracker = new_tracker()
    emitter = TextEmitter(tracker, text.write)
    pump(iter(records), tracker, emitter)
    emitter.close()
    assert summary_json(tracker) == summary_json(ref)


@pytest.mark.parametrize("mode", [["--json"], ["--summary"], ["--summary", "--json"], []])
def test_a_three_byte_dss_ending_the_header_is_malformed_not_a_crash(
        tmp_path: Path, mode: list[str]) -> None:
    """Issue 8: one spoofed 44-byte segment on a tracked subflow, its options `01 1e 03 20`
    (NOP, then a DSS of length 3 flush against the header's end), killed the sniffer with
    an IndexError in the fast path. It is a malformed DSS, as the reference path says."""
    from mptcplab.capture import PcapWriter
    from mptcplab.cli import main

    script = [(f, a, fl, sq, ak, o, p, 0, LINKTYPE_RAW) for f, a, fl, sq, ak, o, p in _handshake()]
    script.append((0, IPV4, 0x10, 1001, 5001, bytes.fromhex("011e0320"), b"", 0, LINKTYPE_RAW))
    records = _records(script, False, False)
    assert len(records[-1][3]) == 44
    path = tmp_path / "spoofed.pcap"
    writer = PcapWriter(path)
    for _, time, linktype, data, wirelen in records:
        writer.write(time, linktype, data, wirelen)
    writer.close()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sniff", "-r", str(path), *mode]) == 0
    text = out.getvalue()
    if mode == ["--json"]:
        last = json.loads(text.splitlines()[-1])
        assert (last["frame"], last["connection"], last["subflow"]) == (7, 1, 1)
        assert last["options"] == [{"subtype": "DSS", "length": 3, "malformed": True,
                                    "raw": "1e0320",
                                    "reason": "DSS: length 3 leaves no room for the flags"}]
    elif mode == ["--summary", "--json"]:
        assert json.loads(text)["mptcp_packets"] == 7
    else:
        assert "7 packets, 7 with MPTCP options; 1 connection, 2 subflows" in text


def test_generated_handshake_is_tracked_and_validated() -> None:
    """The generator's own handshake: one connection, the join under it, HMACs valid."""
    records = _records([(f, a, fl, sq, ak, o, p, 0, LINKTYPE_ETHERNET)
                        for f, a, fl, sq, ak, o, p in _handshake()], False, False)
    lines, tracker = json_run(iter(records), fast=True)
    conn = only_connection(tracker)
    assert [s["subflow"] for s in conn["subflows"]] == [1, 2]
    assert tracker.hmacs.as_tuple() == (2, 0, 0)
    assert [json.loads(x)["subflow"] for x in lines] == [1, 1, 1, 2, 2, 2]


def test_mapping_reannounced_with_its_data_fin_uses_the_bytes_already_seen() -> None:
    """Linux extends a mapping to carry the DATA_FIN when the last bytes go out: the new
    mapping (length + 1, new checksum) covers bytes that passed before it was announced."""
    from mptcplab.decode import Segment, decode_option

    idsn = crypto.key_idsn(KEY_C)
    data = (bytes(range(256)) * 6)[:1500]
    first = _dss(0x05, 1, idsn + 1, 1, 1500, crypto.dss_checksum(idsn + 1, 1, 1500, data))
    extended = _dss(0x15, 1, idsn + 1, 1, 1501, crypto.dss_checksum(idsn + 1, 1, 1501, data))
    c, s = ("10.0.1.1", 1111), ("10.0.1.2", 5001)

    def seg(frame: int, src: tuple[str, int], dst: tuple[str, int], flags: str, seq: int,
            opt: bytes, payload: bytes = b"") -> Segment:
        return Segment(frame, 0.0, src[0], src[1], dst[0], dst[1], flags, seq, 0, len(payload),
                       [decode_option(opt)], payload)

    tracker = Tracker()
    anns = [tracker.feed(x) for x in [
        seg(1, c, s, "S", 100, bytes([30, 4, 0x01, 0x81])),
        seg(2, s, c, "SA", 900, bytes([30, 12, 0x01, 0x81]) + KEY_S.to_bytes(8, "big")),
        seg(3, c, s, "A", 101, bytes([30, 20, 0x01, 0x81]) + KEY_C.to_bytes(8, "big")
            + KEY_S.to_bytes(8, "big")),
        seg(4, c, s, "PA", 101, first, data[:1000]),
        seg(5, c, s, "PA", 1101, extended, data[1000:]),
    ]]
    assert anns[3] is not None and anns[4] is not None
    assert anns[3].verdicts(0) == {"checksum_valid": True}
    assert anns[4].verdicts(0) == {"checksum_valid": True}
    assert tracker.checksums.as_tuple() == (2, 0, 0)


@pytest.mark.parametrize("how", ["SYN retried plain", "SYN-ACK without MP_CAPABLE"])
def test_fallback_to_tcp_is_reported_and_the_bytes_still_counted(how: str) -> None:
    syn = (0, IPV4, 0x02, 1000, 0, bytes([30, 4, 0x01, 0x01]), b"", 0, LINKTYPE_RAW)
    script = [syn]
    if how == "SYN retried plain":
        script.append((0, IPV4, 0x02, 1000, 0, TS, b"", 0, LINKTYPE_RAW))
    script += [
        (1, IPV4, 0x12, 5000, 1001, TS, b"", 0, LINKTYPE_RAW),
        (0, IPV4, 0x10, 1001, 5001, TS, b"", 0, LINKTYPE_RAW),
        (0, IPV4, 0x18, 1001, 5001, TS, b"x" * 700, 0, LINKTYPE_RAW),
        (1, IPV4, 0x18, 5001, 1701, TS, b"y" * 300, 0, LINKTYPE_RAW),
    ]
    lines, tracker = json_run(iter(_records(script, False, False)), fast=True)
    conn = only_connection(tracker)
    assert conn["fallback"] is True
    (sub,) = conn["subflows"]
    assert (sub["bytes_to_server"], sub["bytes_to_client"]) == (700, 300)
    assert len(lines) == 1            # only the SYN carried MPTCP
