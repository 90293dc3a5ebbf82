"""`mptcplab sniff -n NETNS` on a real kernel MPTCP transfer in a lab (root, tcpdump)."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from topo_fixtures import (
    mptcp_transfer,
    needs_root,
    needs_tcpdump,
    root_guard,  # noqa: F401  (module fixture)
)

from mptcplab.topo import Lab, catalogue

pytestmark = [needs_root, needs_tcpdump, pytest.mark.usefixtures("root_guard")]
PORT = 5000


def wait_stderr(proc: subprocess.Popen[str], word: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = proc.stderr.readline()
                if word in line:
                    return line
                if not line:
                    break
    proc.kill()
    raise AssertionError(f"sniff never said {word!r}")


def test_sniffing_a_lab_node_finds_both_subflows_and_checks_everything(tmp_path: Path) -> None:
    """Sniff in the client's namespace while it uploads with DSS checksums on: the join is
    grouped under the connection's token, its HMACs, the ADD_ADDR HMAC and every DSS checksum
    verify, Ctrl-C ends the capture cleanly with the kernel's drop counter."""
    out_file = tmp_path / "packets.json"
    with Lab(catalogue.get("two-paths", checksum=True)) as lab:
        client, server = lab["client"], lab["server"]
        with out_file.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mptcplab.cli", "sniff", "any", "-n", client.netns,
                 "--json", "-w", str(tmp_path / "copy.pcap"), "tcp", "port", str(PORT)],
                stdout=out, stderr=subprocess.PIPE, text=True)
            try:
                wait_stderr(proc, "capturing on any in " + client.netns)

                def joined() -> None:
                    deadline = time.monotonic() + 10
                    while server.counters().get("MPTcpExtMPJoinAckRx", 0) < 1:
                        assert time.monotonic() < deadline, "the second subflow never joined"
                        time.sleep(0.02)

                payload = bytes(range(256)) * 2000
                got = mptcp_transfer(server, client, "10.0.1.2", payload, port=PORT,
                                     during=joined)
                assert got.received == payload
                time.sleep(0.3)
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert proc.returncode == 0, err
    stats = err.strip().splitlines()[-1]
    assert stats.startswith("mptcplab: ") and "0 dropped by kernel" in stats, err

    packets = [json.loads(line) for line in out_file.read_text().splitlines()]
    labels = {(p["connection"], p["subflow"]) for p in packets}
    assert labels == {(1, 1), (1, 2)}
    verdicts = {}
    for p in packets:
        for o in p["options"]:
            for key in ("hmac_valid", "checksum_valid"):
                if key in o and (o.get("hmac") is not None or key != "hmac_valid"
                                 or "truncated_hmac" in o):      # not an ADD_ADDR echo
                    verdicts.setdefault((o["subtype"], o["length"]), set()).add(o[key])
    assert verdicts[("MP_JOIN", 16)] == {True} and verdicts[("MP_JOIN", 24)] == {True}
    assert verdicts[("ADD_ADDR", 16)] == {True}
    dss = {v for (subtype, _), vs in verdicts.items() if subtype == "DSS" for v in vs}
    assert dss == {True}, err
    second = next(p for p in packets if p["subflow"] == 2)
    assert second["src"] == "10.0.2.1" and second["dst"] == "10.0.2.2"

    # what -w kept reads back the same
    proc2 = subprocess.run([sys.executable, "-m", "mptcplab.cli", "sniff", "-r",
                            str(tmp_path / "copy.pcap"), "--json", "--summary"],
                           capture_output=True, text=True, timeout=60, check=True)
    summary = json.loads(proc2.stdout)
    (conn,) = summary["connections"]
    assert summary["mptcp_packets"] == len(packets)
    assert [s["subflow"] for s in conn["subflows"]] == [1, 2]
    assert conn["checksum"] is True and conn["fallback"] is False
    # Every byte went over some subflow; a few may have gone over both (the kernel reinjects
    # data of a subflow that stalls, which happens on a loaded machine).
    carried = [s["bytes_to_server"] for s in conn["subflows"]]
    assert all(carried) and len(payload) <= sum(carried) < 1.1 * len(payload), carried


@pytest.mark.parametrize("immediate", [False, True], ids=["ring-blocks", "immediate-mode"])
def test_a_burst_of_full_packets_waits_in_the_ring_without_immediate_mode(
        immediate: bool) -> None:
    """3000 packets of 1.4 kB while nobody reads the pipe: 1 MiB of them fits the pipe, the
    rest must wait in the kernel's ring. Without immediate mode (what the sniffer uses unless
    its lines go to a terminal) the 64 MiB ring holds them all; in immediate mode libpcap's
    ring is ~250 frames of one snap length (262144) each: what the pipe and the ring cannot
    hold (over a third of the burst) is dropped — what made the sniffer drop packets at a few
    ten thousand packets/s."""
    import socket

    from mptcplab.capture import LiveCapture

    burst, size = 3000, 1400
    with Lab(catalogue.get("two-paths")) as lab:
        client = lab["client"]
        capture = LiveCapture("eth0", netns=client.netns, bpf="udp dst port 9",
                              buffer_kib=65536, immediate=immediate).start()
        try:
            sock = client.socket(socket.AF_INET, socket.SOCK_DGRAM)
            payload = b"\xab" * size
            for _ in range(burst):
                sock.sendto(payload, ("10.0.1.2", 9))
            sock.close()
            capture.request_stop()
            records = sum(1 for _ in capture.records())
        finally:
            stats = capture.stop()
    assert stats.captured == records
    assert stats.captured + stats.dropped_by_kernel + stats.unread == burst, stats
    if immediate:
        assert stats.dropped_by_kernel > burst // 3, stats
    else:
        assert (stats.captured, stats.dropped_by_kernel) == (burst, 0), stats
