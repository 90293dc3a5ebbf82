"""Fault injection, seeded: the sniffer's fast path against its reference path on mutated
streams of real captures, and the capture readers on mutated files.

Each case is one seed; a failure names it, so `python3 -m pytest tests/test_fuzz.py -k SEED`
reproduces it. ``MPTCPLAB_FUZZ=N`` runs N times as many seeds (the default run takes a few
seconds; ``MPTCPLAB_FUZZ=50`` is the long run the docs quote).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from capture_paths import OTHERS, OWN

from mptcplab.capture import LINKTYPE_ETHERNET, RecordTuple, iter_file, iter_stream
from mptcplab.cli import main
from mptcplab.decode import ip_offset
from mptcplab.errors import BadInput, ExitStatus
from mptcplab.report import summary_json
from mptcplab.sniff import JsonEmitter, TextEmitter, new_tracker, pump

SCALE = max(1, int(os.environ.get("MPTCPLAB_FUZZ", "1")))
CAPTURES = OWN + OTHERS
_RECORDS: dict[Path, list[RecordTuple]] = {}


def records_of(path: Path) -> list[RecordTuple]:
    if path not in _RECORDS:
        _RECORDS[path] = list(iter_file(path))
    return _RECORDS[path]


# ---------------------------------------------------------------------------------------------
# Mutating frames where the decoders look: TCP options, data offset, lengths, flags


# Option bytes that end a header badly: a DSS too short for its flags byte (the crash of
# issue 8), lengths under 4, a length running past the header, a lone kind byte.
ODD_ENDS = [b"\x01\x1e\x03\x20", b"\x1e\x03\x20", b"\x1e\x04\x20\x00", b"\x1e\x04\x20\x15",
            b"\x1e\x08\x20\x01\x00\x00\x00\x01", b"\x1e\x14\x20\x05", b"\x1e\x02", b"\x1e",
            b"\x00", b"\x01", b"\x1e\x10\x20\x04", b"\x1e\x12\x20\x04", b"\x08\x0a",
            b"\x1e\x0c\x20\x01\x00\x00\x00\x05\x00\x00\x00\x00"]


def _headers(data: bytes, linktype: int) -> tuple[int, int]:
    """Where the IP and the TCP header start (-1 when the frame has none to mutate)."""
    ip = ip_offset(data, linktype)
    if ip < 0 or len(data) < ip + 20:
        return -1, -1
    version = data[ip] >> 4
    if version == 4:
        return ip, ip + (data[ip] & 0x0F) * 4
    return (ip, ip + 40) if version == 6 else (ip, -1)


def _set_ip_length(data: bytearray, ip: int, tcp_length: int) -> None:
    if data[ip] >> 4 == 4:
        struct.pack_into("!H", data, ip + 2, tcp_length + (data[ip] & 0x0F) * 4)
    else:
        struct.pack_into("!H", data, ip + 4, tcp_length)


def mutate_frame(rng: random.Random, frame: bytes, linktype: int) -> bytes:
    data = bytearray(frame)
    ip, tcp = _headers(frame, linktype)
    if tcp < 0 or len(data) < tcp + 20:
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    doff = (data[tcp + 12] >> 4) * 4
    start, end = tcp + 20, min(tcp + doff, len(data))
    how = rng.randrange(9)
    if how == 0 and end > start:            # bytes inside the options
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(start, end)] = rng.choice(
                [rng.randrange(256), 30, 0, 1, 2, 3, 4, 0x20])
    elif how == 1:                           # an odd option over the end of the options
        odd = rng.choice(ODD_ENDS)
        at = max(start, end - len(odd))
        data[at:end] = odd[:end - at]
    elif how == 2:                           # the frame cut in or just after the header
        del data[rng.randrange(tcp, min(len(data), tcp + doff + 8) + 1):]
    elif how == 3:                           # another data offset
        data[tcp + 12] = rng.randrange(16) << 4 | data[tcp + 12] & 0x0F
    elif how == 4:                           # another IP length
        _set_ip_length(data, ip, rng.randrange(65536 - 60))
    elif how == 5:                           # other TCP flags
        data[tcp + 13] = rng.randrange(256)
    elif how == 6 and doff > 20:             # the options area 4 bytes shorter
        data[tcp + 12] = (doff - 4) // 4 << 4 | data[tcp + 12] & 0x0F
    elif how == 7:                           # an odd option flush against the end, no payload
        odd = rng.choice(ODD_ENDS)
        new_doff = 20 + (len(odd) + 3) // 4 * 4
        data[start:] = b"\x01" * (new_doff - 20 - len(odd)) + odd
        data[tcp + 12] = new_doff // 4 << 4 | data[tcp + 12] & 0x0F
        _set_ip_length(data, ip, new_doff)
    else:                                    # a byte of the IP header
        data[rng.randrange(ip, tcp)] = rng.randrange(256)
    return bytes(data)


def mutated_stream(seed: int) -> tuple[str, list[RecordTuple]]:
    """A window of a capture (from its start half the time, so subflows are tracked) with a
    few frames mutated."""
    rng = random.Random(seed)
    path = rng.choice(CAPTURES)
    records = records_of(path)
    first = 0 if rng.random() < 0.5 else rng.randrange(len(records))
    window = list(records[first:first + rng.randint(5, 80)])
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(window))
        number, time, linktype, data, wirelen = window[i]
        window[i] = (number, time, linktype, mutate_frame(rng, data, linktype), wirelen)
    return path.name, window


def run_json(records: list[RecordTuple], fast: bool) -> tuple[str, Any]:
    tracker = new_tracker()
    out = io.StringIO()
    emitter = JsonEmitter(tracker, out.write)
    pump(iter(records), tracker, emitter, fast=fast)
    emitter.close()
    return out.getvalue(), tracker


STREAM_SEEDS = range(400 * SCALE)


@pytest.mark.parametrize("block", range(0, len(STREAM_SEEDS), 100),
                         ids=lambda b: f"seeds{b}-{b + 99}")
def test_fast_path_equals_reference_on_mutated_streams(block: int) -> None:
    for seed in STREAM_SEEDS[block:block + 100]:
        name, records = mutated_stream(seed)
        fast_out, fast = run_json(records, fast=True)
        ref_out, ref = run_json(records, fast=False)
        where = f"seed {seed} ({name})"
        assert fast_out == ref_out, where
        assert summary_json(fast) == summary_json(ref), where
        assert (fast.hmacs.as_tuple(), fast.checksums.as_tuple()) == \
            (ref.hmacs.as_tuple(), ref.checksums.as_tuple()), where
        text = io.StringIO()
        tracker = new_tracker()
        emitter = TextEmitter(tracker, text.write)
        pump(iter(records), tracker, emitter)
        emitter.close()
        assert summary_json(tracker) == summary_json(ref), where


def test_the_mutations_reach_the_fast_path() -> None:
    """The mutated streams are worth comparing only if the fast path takes part of them."""
    fast_packets = sum(run_json(mutated_stream(seed)[1], fast=True)[1].fast_mptcp_packets
                       for seed in range(50))
    assert fast_packets > 200


# ---------------------------------------------------------------------------------------------
# The readers on mutated files


def pcapng(records: list[RecordTuple], *, endian: str = "<", ns: bool = False,
           simple: bool = False, last_option: bytes | None = None) -> bytes:
    """The records as pcapng: a section header, an interface block with options (a name,
    a comment, if_tsresol when ``ns``, then ``last_option``'s bytes or opt_endofopt), then
    enhanced (or simple) packet blocks."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        size = 12 + len(body)
        return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)

    def option(code: int, value: bytes) -> bytes:
        return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)

    linktype = records[0][2] if records else LINKTYPE_ETHERNET
    options = option(2, b"veth0") + option(1, b"fuzzed") + (option(9, b"\x09") if ns else b"")
    out = block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    end = option(0, b"") if last_option is None else last_option
    out += block(1, struct.pack(endian + "HHI", linktype, 0, 262144) + options + end)
    for _, time, _, data, wirelen in records:
        if simple:
            out += block(3, struct.pack(endian + "I", len(data)) + data)
        else:
            ticks = round(time * (1e9 if ns else 1e6))
            out += block(6, struct.pack(endian + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(data), wirelen) + data)
    return out


def reader_corpus() -> list[tuple[str, bytes]]:
    """Small pcap and pcapng files: the captures (the large ones cut to their first records)
    and pcapng made from them three ways."""
    corpus = []
    for path in CAPTURES:
        records = records_of(path)[:40]
        if path.stat().st_size < 64 << 10:
            corpus.append((path.name, path.read_bytes()))
        corpus.append((path.name + ":ng", pcapng(records)))
        corpus.append((path.name + ":ng-big-endian-ns", pcapng(records, endian=">", ns=True)))
        corpus.append((path.name + ":ng-simple", pcapng(records, simple=True)))
    return corpus


def block_ends(blob: bytes) -> list[int]:
    """Where each pcapng block's body ends (where its last option sits); [] for a pcap."""
    if blob[:4] != b"\x0a\x0d\x0d\x0a":
        return []
    endian = "<" if blob[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    ends, pos = [], 0
    while pos + 12 <= len(blob):
        size = struct.unpack_from(endian + "I", blob, pos + 4)[0]
        ends.append(pos + size - 4)
        pos += size
    return ends


def mutate_file(rng: random.Random, blob: bytes) -> bytes:
    data = bytearray(blob)
    ends = block_ends(blob)
    for _ in range(rng.randint(1, 5)):
        if not data:
            break
        size = len(data)
        how = rng.randrange(7)
        if how == 6 and ends:                 # a block's last option header, odd
            at = rng.choice(ends) - 4
            code = rng.choice([0, 1, 2, 9, 0xFFFF])
            length = rng.choice([0, 1, 3, 8, 0xFFFF])
            endian = "<" if blob[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            data[at:at + 4] = struct.pack(endian + "HH", code, length)
            continue
        if how == 0:                          # the headers and first blocks
            data[rng.randrange(min(size, 200))] = rng.randrange(256)
        elif how == 1:
            data[rng.randrange(size)] = rng.randrange(256)
        elif how == 2:                        # cut short
            del data[rng.randrange(size):]
        elif how == 3:
            at = rng.randrange(size)
            del data[at:at + rng.randint(1, 16)]
        elif how == 4:
            at = rng.randrange(min(size, 200))
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:                                 # a length field: 0, tiny, huge, or odd
            at = rng.randrange(min(size, 200)) & ~3
            data[at:at + 4] = rng.choice([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                                          b"\x09\x00\xff\xff", b"\x0c\x00\x00\x00"])
    return bytes(data)


def read_all(blob: bytes, chunk: int) -> int:
    """Every record of the bytes, read ``chunk`` bytes at a time (a pipe delivers little
    at a time); BadInput is the reader's one way to refuse."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = blob[pos:pos + min(n, chunk)]
        pos += len(out)
        return out

    count = 0
    with contextlib.suppress(BadInput):
        for _ in iter_stream(read, "fuzzed"):
            count += 1
    return count


FILE_SEEDS = range(600 * SCALE)


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    return reader_corpus()


@pytest.mark.parametrize("block", range(0, len(FILE_SEEDS), 200),
                         ids=lambda b: f"seeds{b}-{b + 199}")
def test_readers_refuse_mutated_files_with_bad_input_only(
        block: int, corpus: list[tuple[str, bytes]]) -> None:
    for seed in FILE_SEEDS[block:block + 200]:
        rng = random.Random(seed)
        name, blob = rng.choice(corpus)
        blob = mutate_file(rng, blob)
        chunk = rng.choice([1, 5, 64, 1 << 20])
        try:
            read_all(blob, chunk)
        except Exception as exc:      # anything but BadInput is a crash
            raise AssertionError(f"seed {seed} ({name}, chunks of {chunk}): "
                                 f"{type(exc).__name__}: {exc}") from exc


def test_the_corpus_reads_whole_before_mutation(corpus: list[tuple[str, bytes]]) -> None:
    for name, blob in corpus:
        records = read_all(blob, 1 << 20)
        assert records > 0, name
        assert read_all(blob, 7) == records, name


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_sniff_and_decode_end_mutated_files_with_one_line(
        tmp_path: Path, corpus: list[tuple[str, bytes]]) -> None:
    """What a user sees: exit 0, or exit 3 with one `mptcplab: error:` line — never a
    traceback — from `sniff -r` (text, --json, --summary --json) and `decode` (both paths)."""
    path = tmp_path / "fuzzed.cap"
    refused = 0
    for seed in range(60 * SCALE):
        rng = random.Random(seed)
        name, blob = rng.choice(corpus)
        path.write_bytes(mutate_file(rng, blob))
        for argv in (["sniff", "-r", str(path)], ["sniff", "-r", str(path), "--json"],
                     ["sniff", "-r", str(path), "--summary", "--json"],
                     ["decode", str(path), "--json"], ["decode", "--fast", str(path)]):
            code, _, err = _cli(*argv)
            where = f"seed {seed} ({name}): {' '.join(argv)}"
            assert code in (ExitStatus.OK, ExitStatus.BAD_INPUT), (where, err)
            if code:
                refused += 1
                lines = err.splitlines()
                assert len(lines) == 1 and lines[0].startswith("mptcplab: error: "), \
                    (where, err)
    assert refused > 0


# ---------------------------------------------------------------------------------------------
# The cases these fuzzers found (issue 8), kept by name


def test_a_pcapng_option_header_without_its_value_is_bad_input(tmp_path: Path) -> None:
    """An interface block whose last option header (if_tsresol, length 0xffff) has no value:
    tcpdump and tshark refuse it too."""
    path = tmp_path / "cut-option.pcapng"
    path.write_bytes(pcapng(records_of(OWN[0])[:3], last_option=bytes.fromhex("0900ffff")))
    for argv in (["sniff", "-r", str(path)], ["sniff", "-r", str(path), "--summary"],
                 ["decode", str(path)]):
        code, _, err = _cli(*argv)
        assert code == ExitStatus.BAD_INPUT, err
        assert err == f"mptcplab: error: {path}: interface block at byte 28: an option " \
                      "runs past the end of the block\n"
