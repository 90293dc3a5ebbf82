"""`mptcplab sniff` as a user meets it: every capture read without error, the --json contract,
the summary, -w/-c/FILTER, and one-line errors with meaningful exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcplab.cli import main
from mptcplab.errors import ExitStatus
from mptcplab.sniff import json_time

from capture_paths import DATA, OTHERS, OWN, SHARED, needs_shared

IS_ROOT = os.geteuid() == 0


def sniff(*args: str) -> tuple[int, str, str]:
    """Run `mptcplab sniff ARGS` in this process: exit code, stdout, stderr (UTF-8 streams,
    as a terminal would have)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["sniff", *args])
        except SystemExit as exc:        # argparse
            code = int(exc.code or 0)
    out.flush()
    err.flush()
    return (code, out.buffer.getvalue().decode(),       # type: ignore[attr-defined]
            err.buffer.getvalue().decode())              # type: ignore[attr-defined]


_RUNS: dict[tuple[str, ...], tuple[int, str, str]] = {}


def cached(*args: str) -> tuple[int, str, str]:
    if args not in _RUNS:
        _RUNS[args] = sniff(*args)
    return _RUNS[args]


def json_lines(path: Path, *extra: str) -> list[dict[str, Any]]:
    code, out, err = cached("-r", str(path), "--json", *extra)
    assert code == 0 and err == "", err
    return [json.loads(line) for line in out.splitlines()]


# ---------------------------------------------------------------------------------------------
# Every capture, every output


@pytest.mark.parametrize("path", OWN + OTHERS, ids=lambda p: p.name)
def test_every_capture_reads_without_error_in_each_output(path: Path) -> None:
    code, text, err = cached("-r", str(path))
    assert (code, err) == (0, "")
    packets = json_lines(path)
    # one text line per MPTCP packet (frame number first), then the summary
    frames = [int(line.split()[0]) for line in text.splitlines()
              if line[:7].strip().isdigit() and "|" in line]
    assert frames == [p["frame"] for p in packets]
    assert "with MPTCP options" in text.splitlines()[-1] or "handshake" in text
    code, summary, _ = cached("-r", str(path), "--json", "--summary")
    assert code == 0
    (line,) = summary.splitlines()
    assert json.loads(line)["mptcp_packets"] == len(packets)


def test_shared_captures_are_there_or_skipped() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: only the lab's own captures were sniffed")
    assert len(OTHERS) == 9


# The contract's field names, per option subtype (besides subtype and length).
CONTRACT = {
    "MP_CAPABLE": {"version", "flags", "sender_key", "receiver_key", "data_level_len",
                   "checksum", "checksum_valid"},
    "MP_JOIN": {"backup", "addr_id", "token", "nonce", "truncated_hmac", "hmac", "hmac_valid"},
    "DSS": {"data_ack", "data_ack_len", "dsn", "dsn_len", "ssn", "data_level_len", "checksum",
            "data_fin", "checksum_valid"},
    "ADD_ADDR": {"version", "echo", "addr_id", "addr", "port", "hmac", "hmac_valid"},
    "REMOVE_ADDR": {"addr_ids"},
    "MP_PRIO": {"backup", "addr_id"},
    "MP_FAIL": {"dsn"},
    "MP_FASTCLOSE": {"receiver_key"},
    "MP_TCPRST": {"flags", "reason", "reason_name"},
}
INTEGERS = {"sender_key", "receiver_key", "token", "nonce", "truncated_hmac", "data_ack", "dsn",
            "ssn", "data_level_len", "checksum", "addr_id", "length", "reason"}
PACKET_KEYS = ["type", "frame", "time", "src", "sport", "dst", "dport", "tcp_flags", "seq",
               "ack", "payload_len", "connection", "subflow", "options"]


@pytest.mark.parametrize("path", OWN + OTHERS, ids=lambda p: p.name)
def test_json_lines_follow_the_contract(path: Path) -> None:
    packets = json_lines(path)
    assert packets
    frames = [p["frame"] for p in packets]
    assert frames == sorted(set(frames)) and frames[0] >= 1
    seen_conns: list[int] = []
    seen_subs: dict[int, list[int]] = {}
    for p in packets:
        assert list(p) == PACKET_KEYS
        assert p["type"] == "packet" and p["options"]
        for key in ("frame", "sport", "dport", "seq", "ack", "payload_len"):
            assert type(p[key]) is int, (key, p)
        assert isinstance(p["time"], float) and isinstance(p["tcp_flags"], str)
        assert set(p["tcp_flags"]) <= set("FSRPAUECN")
        for opt in p["options"]:
            fields = set(opt) - {"subtype", "length"}
            if opt.get("malformed"):
                assert fields == {"malformed", "raw", "reason"}
                bytes.fromhex(opt["raw"])
                assert opt["reason"] and isinstance(opt["reason"], str)
                continue
            assert opt["subtype"] in CONTRACT or opt["subtype"] in (
                "MP_EXPERIMENTAL", "UNKNOWN"), opt
            assert fields <= CONTRACT.get(opt["subtype"], fields), opt
            for key in fields & INTEGERS:
                if opt[key] is not None:
                    assert type(opt[key]) is int, (key, opt)
            for key in fields:
                if key.endswith("_valid"):
                    assert opt[key] in (True, False, None)
            if "hmac" in fields and opt["subtype"] == "MP_JOIN":
                assert len(bytes.fromhex(opt["hmac"])) == 20
            for key in ("data_ack", "dsn"):
                if key in opt:
                    assert opt[key + "_len"] in (4, 8) and opt[key] < 1 << 8 * opt[key + "_len"]
        # numbering: 1-based, in order of first appearance
        conn, sub = p["connection"], p["subflow"]
        assert (conn is None) == (sub is None)
        if conn is not None:
            if conn not in seen_conns:
                assert conn == len(seen_conns) + 1
                seen_conns.append(conn)
                seen_subs[conn] = []
            if sub not in seen_subs[conn]:
                assert sub == len(seen_subs[conn]) + 1
                seen_subs[conn].append(sub)


@pytest.mark.parametrize("path", OWN + OTHERS, ids=lambda p: p.name)
def test_json_summary_follows_the_contract(path: Path) -> None:
    _, out, _ = cached("-r", str(path), "--json", "--summary")
    summary = json.loads(out)
    assert list(summary) == ["type", "packets", "mptcp_packets", "hmacs", "checksums",
                             "connections", "orphans"]
    assert summary["type"] == "summary" and summary["packets"] >= summary["mptcp_packets"]
    for tally in ("hmacs", "checksums"):
        assert list(summary[tally]) == ["valid", "invalid", "unchecked"]
        assert all(type(v) is int and v >= 0 for v in summary[tally].values())
    for orphan in summary["orphans"]:
        assert list(orphan) == ["src", "sport", "dst", "dport"]
    for n, conn in enumerate(summary["connections"], start=1):
        assert list(conn) == ["connection", "version", "client_key", "server_key",
                              "client_token", "server_token", "client_idsn", "server_idsn",
                              "checksum", "fallback", "add_addrs", "remove_addrs",
                              "mp_fastclose", "mp_fail", "subflows"]
        assert conn["connection"] == n
        for key in ("client_key", "server_key", "client_token", "server_token",
                    "client_idsn", "server_idsn", "version"):
            assert conn[key] is None or type(conn[key]) is int
        for key in ("checksum", "fallback", "mp_fastclose", "mp_fail"):
            assert type(conn[key]) is bool
        for add in conn["add_addrs"]:
            assert list(add) == ["frame", "by", "echo", "addr_id", "addr", "port", "hmac",
                                 "hmac_valid"]
            assert add["by"] in ("client", "server") and add["hmac_valid"] in (True, False, None)
            assert (add["hmac"] is None) <= (add["hmac_valid"] is None)
        for rm in conn["remove_addrs"]:
            assert list(rm) == ["frame", "by", "addr_ids"] and rm["addr_ids"]
        for m, sub in enumerate(conn["subflows"], start=1):
            assert list(sub) == ["subflow", "src", "sport", "dst", "dport", "via", "backup",
                                 "bytes_to_server", "bytes_to_client", "mp_tcprst"]
            assert sub["subflow"] == m and type(sub["backup"]) is bool
            assert sub["via"] in ("MP_CAPABLE", "MP_JOIN")
            assert type(sub["bytes_to_server"]) is int and type(sub["bytes_to_client"]) is int
            assert sub["mp_tcprst"] is None or isinstance(sub["mp_tcprst"], str)


@needs_shared
def test_json_subflow_numbers_follow_the_iperf_joins() -> None:
    packets = json_lines(SHARED / "iperf-mptcp-0-0.pcap")
    by_flow = {}
    for p in packets:
        by_flow.setdefault((p["src"], p["sport"], p["dst"], p["dport"]), set()).add(
            (p["connection"], p["subflow"]))
    # each direction of each TCP connection carries one (connection, subflow) label
    assert all(len(labels) == 1 for labels in by_flow.values())
    assert {lab for labels in by_flow.values() for lab in labels} == {(1, 1), (1, 2), (1, 3),
                                                                      (1, 4)}
    syns = [p for p in packets if p["tcp_flags"] == "S"]
    assert [(p["frame"], p["subflow"]) for p in syns][:4] == [(5, 1), (24, 2), (26, 3), (27, 4)]


# ---------------------------------------------------------------------------------------------
# What a person reads


def test_text_lines_show_numbers_relative_dsns_and_verdicts() -> None:
    _, out, _ = cached("-r", str(DATA / "kernel-v1-csum.pcap"))
    lines = out.splitlines()
    join_ack = next(line for line in lines if "MP_JOIN ACK" in line)
    assert " c1 s2 " in join_ack and join_ack.endswith("✓")
    add_addr = next(line for line in lines if "ADD_ADDR id=2" in line)
    assert add_addr.endswith("✓")
    # the client's first DSS mapping after the 3000 bytes of MP_CAPABLE data: DSN 3001
    first_dss = next(line for line in lines if " dsn " in line and "> 10.0.1.2:5001" in line)
    assert " dsn 3001 ssn 3001 " in first_dss and first_dss.endswith("✓")
    mp_capable_data = next(line for line in lines if "ACK+data+csum" in line)
    assert mp_capable_data.endswith("✓")


def test_summary_table_lists_keys_tokens_subflows_and_signals() -> None:
    _, out, _ = cached("-r", str(DATA / "kernel-v1-pm.pcap"), "--summary")
    summary = json.loads(cached("-r", str(DATA / "kernel-v1-pm.pcap"), "--json",
                                "--summary")[1])
    conn = summary["connections"][0]
    assert f"{conn['client_key']:#018x}" in out and f"{conn['server_token']:#010x}" in out
    assert "id 2 10.0.2.2:10100 by server ✓" in out      # ADD_ADDR, HMAC verified
    assert "ids 2 by server" in out                       # REMOVE_ADDR
    assert "MP_FASTCLOSE" in out and "Unspecified error" in out
    rows = [line.split() for line in out.splitlines() if "MP_JOIN" in line]
    assert rows and rows[0][:2] == ["1", "2"] and "yes" in rows[0]     # backup subflow
    assert out.splitlines()[-1].startswith("21 packets, 20 with MPTCP options; 1 connection, "
                                           "2 subflows; HMACs 3 ✓ 0 ✗ 0 ?")


@needs_shared
def test_summary_counts_the_invalid_add_addr_hmac() -> None:
    _, out, _ = cached("-r", str(SHARED / "mptcp-aa-v1.pcap"), "--summary")
    assert "id 1 192.168.136.225 by server ✗" in out
    assert "HMACs 0 ✓ 1 ✗ 0 ?" in out.splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# -w, -c, FILTER


def test_write_count_and_filter_on_a_file(tmp_path: Path) -> None:
    src = DATA / "kernel-v1-join.pcap"
    out_file = tmp_path / "second.pcap"
    code, out, err = sniff("-r", str(src), "--json", "-w", str(out_file), "host", "10.0.2.2")
    assert (code, err) == (0, "")
    filtered = [json.loads(x) for x in out.splitlines()]
    assert filtered and all("10.0.2.2" in (p["src"], p["dst"]) for p in filtered)
    # frames keep their numbers in the file read; the join alone is a connection by token
    assert filtered[0]["frame"] > 1 and {p["connection"] for p in filtered} == {1}
    again = json_lines(out_file)
    assert [p["options"] for p in again] == [p["options"] for p in filtered]
    assert [p["frame"] for p in again] == list(range(1, len(filtered) + 1))
    if shutil.which("tcpdump"):
        listed = subprocess.run(["tcpdump", "-nr", str(out_file)], capture_output=True,
                                text=True, check=True)
        assert len(listed.stdout.splitlines()) == len(filtered)
    code, out, _ = sniff("-r", str(src), "--json", "-c", "3")
    assert [json.loads(x)["frame"] for x in out.splitlines()] == [1, 2, 3]


def test_writing_over_the_file_being_read_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.pcap"
    victim.write_bytes((DATA / "kernel-v1-pm.pcap").read_bytes())
    code, out, err = sniff("-r", str(victim), "-w", str(victim), "--summary")
    assert code == 2 and "would destroy it" in err and err.count("\n") == 1
    assert victim.read_bytes() == (DATA / "kernel-v1-pm.pcap").read_bytes()


# ---------------------------------------------------------------------------------------------
# Bad input: one line, a meaningful exit code


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mptcplab: error: ")
    return lines[0]


def test_garbage_missing_and_directory(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture at all\n" * 10)
    for target, words in ((garbage, "not a pcap or pcapng file"),
                          (tmp_path / "missing.pcap", "no such file"),
                          (tmp_path, "is a directory")):
        code, out, err = sniff("-r", str(target))
        assert code == ExitStatus.BAD_INPUT and out == ""
        assert words in one_error_line(err)


@needs_shared
def test_truncated_file_shows_everything_before_the_damage(tmp_path: Path) -> None:
    whole = (SHARED / "mptcp-v0.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:30000])
    code, out, err = sniff("-r", str(cut), "--json")
    assert code == ExitStatus.BAD_INPUT
    assert "record 193 is cut short" in one_error_line(err)
    frames = [json.loads(x)["frame"] for x in out.splitlines()]
    assert frames == list(range(1, 193))
    code, out, err = sniff("-r", str(cut))
    assert code == ExitStatus.BAD_INPUT and "cut short" in one_error_line(err)
    assert out.splitlines()[-1].startswith("192 packets, 192 with MPTCP options")


def test_usage_errors() -> None:
    code, _, err = sniff("-r", str(DATA / "kernel-v1-pm.pcap"), "tcp", "port")
    assert code == ExitStatus.USAGE and "bad filter" in one_error_line(err)
    code, _, err = sniff("-r", str(DATA / "kernel-v1-pm.pcap"), "-n", "somewhere")
    assert code == ExitStatus.USAGE and "-n" in one_error_line(err)
    code, _, err = sniff()
    assert code == ExitStatus.USAGE and "interface" in one_error_line(err)


@pytest.mark.skipif(not IS_ROOT, reason="needs root: without it the privilege check answers first")
def test_unknown_interface_and_namespace() -> None:
    code, out, err = sniff("mptl-nosuch0", "-c", "1")
    assert code == ExitStatus.BAD_INPUT and out == ""
    assert "no interface mptl-nosuch0" in one_error_line(err)
    code, out, err = sniff("lo", "-n", "mptl-nosuch-ns", "-c", "1")
    assert code == ExitStatus.BAD_INPUT and "no network namespace" in one_error_line(err)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_live_capture_without_privileges_is_refused_in_one_line() -> None:
    """Run as a process without capabilities (root's are dropped with setpriv: uid 0 keeps
    its files readable, but CAP_NET_RAW is gone as for any other user)."""
    drop = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"] \
        if IS_ROOT else []
    proc = subprocess.run([*drop, sys.executable, "-m", "mptcplab.cli", "sniff", "lo", "-c", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == ExitStatus.NOT_ROOT and proc.stdout == ""
    assert "needs root" in one_error_line(proc.stderr)
    # reading a file needs no privilege
    proc = subprocess.run([*drop, sys.executable, "-m", "mptcplab.cli", "sniff", "-r",
                           str(DATA / "kernel-v1-pm.pcap"), "--json", "--summary"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout)["packets"] == 21


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.floats(0, 2**40, allow_nan=False),
                 st.builds(lambda s, us: s + us * 1e-6, st.integers(0, 2**33),
                           st.integers(0, 999_999)),
                 st.builds(lambda s, ns: s + ns * 1e-9, st.integers(0, 2**32),
                           st.integers(0, 999_999_999))))
def test_fast_time_text_is_what_json_writes_for_the_rounded_time(t: float) -> None:
    """The fast path writes "time" itself; it must read exactly as the reference path's."""
    assert json_time(t) == json.dumps(round(t, 6))


def test_ctrl_c_while_reading_prints_the_summary_and_exits_130(tmp_path: Path) -> None:
    """Interrupted while the capture is still arriving (a FIFO): what was read is
    summarized, the exit code says it was interrupted."""
    import signal
    import time

    fifo = tmp_path / "pipe.pcap"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "sniff", "-r", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    whole = (DATA / "kernel-v1-join.pcap").read_bytes()
    with fifo.open("wb") as writer:          # returns once the sniffer has opened the FIFO
        writer.write(whole[:2000])           # the header and the first records
        writer.flush()
        time.sleep(1.0)                      # it decodes them, then waits for more
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitStatus.INTERRUPTED, err
    last = out.splitlines()[-1]
    assert last.endswith("DSS checksums 0 ✓ 0 ✗ 0 ?") and "packets, " in last
    assert " c1 s1 " in out and "MP_CAPABLE" in out


def test_unwritable_output_fails_before_reading_and_leaves_nothing(tmp_path: Path) -> None:
    code, out, err = sniff("-r", str(DATA / "kernel-v1-pm.pcap"), "-w",
                           str(tmp_path / "no" / "such" / "dir.pcap"))
    assert code == ExitStatus.BAD_INPUT and out == ""
    assert "cannot write" in one_error_line(err)
    code, _, err = sniff("-r", str(tmp_path / "missing.pcap"), "-w", str(tmp_path / "w.pcap"))
    assert code == ExitStatus.BAD_INPUT and "no such file" in one_error_line(err)
    assert not (tmp_path / "w.pcap").exists()


# ---------------------------------------------------------------------------------------------
# Start-up: a short capture's run is mostly start-up, so `sniff` imports only what it uses

# Modules `sniff` must not import, and why: the layers and topologies are other steps of the
# flow; tabulate (with wcwidth) alone was ~60 ms; dataclasses (with inspect), ctypes and
# subprocess ~5-7 ms each (`python3 -X importtime -m mptcplab.cli sniff ...`).
NOT_FOR_SNIFF = ("scapy", "pyroute2", "tabulate", "wcwidth", "mptcplab.layers", "mptcplab.topo",
                 "mptcplab.peer", "dataclasses", "inspect", "ctypes", "subprocess")


@pytest.mark.parametrize("mode", [["--summary"], ["--json"], ["--summary", "--json"], []])
def test_sniff_imports_no_other_command_and_nothing_it_does_not_use(mode: list[str]) -> None:
    from mptcplab.cli import ALSO, COMMANDS

    script = (
        "import contextlib, io, sys\n"
        "from mptcplab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main({['sniff', '-r', str(DATA / 'kernel-v1-pm.pcap'), *mode]!r})\n"
        "print(code, ' '.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    code, names = proc.stdout.split(" ", 1)
    loaded = set(names.split())
    assert code == "0" and "mptcplab.sniff" in loaded
    unwanted = sorted(m for m in loaded if m.split(".")[0] in NOT_FOR_SNIFF
                      or m.startswith(NOT_FOR_SNIFF))
    assert unwanted == []
    other_commands = {f"mptcplab.cli.{m}" for m in (*COMMANDS, *ALSO.values())} - {
        "mptcplab.cli.sniff"}
    assert loaded & other_commands == set()


def test_each_command_gets_the_same_parser_alone_as_in_the_whole() -> None:
    """`mptcplab CMD ...` builds only the parser of the module registering CMD: its help
    (options, usage, exit codes) is the one the whole parser gives. Every command the whole
    parser offers is found that way (a module registering a command under another name lists
    it in cli.ALSO)."""
    import argparse

    from mptcplab.cli import build_parser, module_of

    def help_of(parser: Any, command: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        return out.getvalue()

    whole = build_parser()
    (commands,) = [a for a in whole._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"sniff", "decode", "topo"} <= set(commands.choices)
    for command in commands.choices:
        assert module_of([command]) is not None, f"{command}: add it to cli.ALSO"
        assert module_of(["--traceback", command, "-x"]) == module_of([command])
        assert help_of(build_parser(module_of([command])), command) == help_of(whole, command)
    for argv in ([], ["--help"], ["snif"], ["-r", "x"]):
        assert module_of(argv) is None          # the whole parser answers


def test_a_typo_in_the_command_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "mptcplab.cli", "snif", "-r", "x"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == ExitStatus.USAGE
    assert "invalid choice: 'snif'" in proc.stderr
    assert all(f"'{name}'" in proc.stderr for name in ("decode", "sniff", "topo"))


@pytest.mark.parametrize("path", OWN + OTHERS, ids=lambda p: p.name)
def test_summary_tables_are_what_tabulate_prints(path: Path, monkeypatch: Any) -> None:
    """The summary's tables are drawn without tabulate (start-up); tabulate, drawing the same
    rows, is the reference."""
    from tabulate import tabulate

    from mptcplab.report import tables

    _, ours, _ = cached("-r", str(path), "--summary")
    monkeypatch.setattr(tables, "table", lambda rows, headers: tabulate(rows, headers=headers))
    _, theirs, _ = sniff("-r", str(path), "--summary")
    assert ours == theirs


def test_the_live_capture_is_in_immediate_mode_only_for_a_terminal(monkeypatch: Any) -> None:
    """Immediate mode (lines as packets come) costs a ring of ~250 full-size frames; the
    sniffer asks for it only when a person is reading its lines."""
    from mptcplab import sniff as sniff_module
    from mptcplab.capture import LiveCapture

    asked: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def fake_start(self: LiveCapture) -> LiveCapture:
        asked.append({"immediate": self.immediate, "U": "-U" in self.argv(),
                      "flag": "--immediate-mode" in self.argv()})
        raise Stop

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(LiveCapture, "start", fake_start)
    for out, summary in ((Terminal(), False), (io.StringIO(), False), (Terminal(), True)):
        with pytest.raises(Stop):
            sniff_module.sniff(sniff_module.SniffOptions(iface="lo", summary=summary), out=out,
                               err=io.StringIO())
    assert asked == [{"immediate": True, "U": True, "flag": True},
                     {"immediate": False, "U": True, "flag": False},
                     {"immediate": False, "U": False, "flag": False}]


def test_lines_reach_the_output_in_large_writes_not_one_per_packet() -> None:
    """With Python's buffering off (PYTHONUNBUFFERED, `python3 -u`) every write to stdout is a
    system call: the sniffer hands its lines on ~64 KiB at a time (and when a live capture is
    momentarily quiet), not a write per packet."""
    from mptcplab.capture import iter_file
    from mptcplab.sniff import JsonEmitter, new_tracker, pump

    writes: list[str] = []
    tracker = new_tracker()
    emitter = JsonEmitter(tracker, writes.append)
    pump(iter_file(SHARED / "iperf-mptcp-0-0.pcap") if SHARED.is_dir()
         else iter_file(DATA / "kernel-v1-join.pcap"), tracker, emitter)
    emitter.close()
    text = "".join(writes)
    lines = text.count("\n")
    assert lines == tracker.mptcp_packets and lines > 10
    assert len(writes) <= len(text) // (1 << 16) + 1
    assert all(len(w) >= 1 << 16 for w in writes[:-1])
