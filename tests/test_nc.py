"""`mptcplab nc` between two lab hosts, run as a user runs it (a command, files on stdin and
stdout): 10 MB over two paths intact with both subflows carrying bytes, the same against a
plain TCP peer (fallback said), both directions at once, IPv6, and the errors a newcomer hits."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.topo import Lab, catalogue

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]

SIZE = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def lab():
    with Lab(catalogue.get("two-paths")) as lab:
        yield lab


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("nc") / "10MB"
    path.write_bytes(os.urandom(SIZE))
    return path


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def nc(lab, node: str, *args: str, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
    return subprocess.Popen([sys.executable, "-m", "mptcplab.cli", "nc", "-n",
                             f"{lab.id}:{node}", *args], stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def listening(proc, timeout: float = 20.0) -> str:
    """Wait for `-v`'s "listening on" line (the listener is ready)."""
    import selectors
    import time

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = proc.stderr.readline()
                if not line or "listening on" in line:
                    return line
    proc.kill()
    raise AssertionError("nc -l never said it was listening")


def finish(proc, timeout: float = 60.0, input: str | None = None) -> tuple[int, str]:
    try:
        _, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"nc did not finish within {timeout} s; stderr: {err}") from None
    return proc.returncode, err


def json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def tx_bytes(host) -> dict[str, int]:
    """Bytes sent by each interface, from `ip -s -j link` (the kernel's counters)."""
    res = host.run(["ip", "-s", "-j", "link", "show"]).check()
    return {ln["ifname"]: ln["stats64"]["tx"]["bytes"] for ln in json.loads(res.stdout)}


def test_10mb_over_two_paths_both_subflows_carry_bytes(lab, big, tmp_path):
    out = tmp_path / "received"
    before = tx_bytes(lab["client"])
    with open(out, "wb") as sink:
        server = nc(lab, "server", "-l", "-v", "--recv-only", "--subflows", "--json", "5301",
                    stdout=sink)
        assert "listening on [::]:5301 (MPTCP)" in listening(server)
        with open(big, "rb") as src:
            client = nc(lab, "client", "--subflows", "--json", "--interval", "0.1",
                        "10.0.1.2", "5301", stdin=src)
            rc, err = finish(client)
        assert rc == 0, err
        src_rc, srv_err = finish(server)
    assert src_rc == 0, srv_err
    assert out.stat().st_size == SIZE and sha(out) == sha(big)
    lines = json_lines(err)
    final = lines[-1]
    assert final["type"] == "summary" and final["mptcp"] and not final["fallback"]
    assert final["bytes_sent"] == SIZE
    ids = [s["id"] for s in final["subflows"]]
    assert ids == [1, 2], final["subflows"]
    locals_ = {s["id"]: s["local"].rsplit(":", 1)[0] for s in final["subflows"]}
    assert locals_ == {1: "10.0.1.1", 2: "10.0.2.1"}
    # the listener's IPv6 socket sees IPv4 clients: their addresses read as IPv4
    served = json_lines(srv_err)[-1]
    assert "connection from 10.0.1.1:" in srv_err
    assert {(s["local"], s["remote"].rsplit(":", 1)[0]) for s in served["subflows"]} == \
        {("10.0.1.2:5301", "10.0.1.1"), ("10.0.2.2:5301", "10.0.2.1")}, served["subflows"]
    for s in final["subflows"]:
        assert s["bytes_sent"] > 500_000, s
        assert s["rtt_ms"] > 0 and s["cwnd"] > 0 and s["backup"] == "no"
    assert sum(s["bytes_sent"] for s in final["subflows"]) >= SIZE
    # the kernel's interface counters say the same: both paths carried the file
    after = tx_bytes(lab["client"])
    for ifname in ("eth0", "eth1"):
        assert after[ifname] - before[ifname] > 500_000, ifname
    # the receiving side saw the bytes arrive on both subflows as well
    srv_final = json_lines(srv_err)[-1]
    assert srv_final["bytes_received"] == SIZE
    assert all(s["bytes_received"] > 500_000 for s in srv_final["subflows"])
    assert any(x["type"] == "subflows" for x in lines[:-1])     # live samples came first


def test_plain_tcp_peer_is_a_fallback_said_in_words(lab, big, tmp_path):
    out = tmp_path / "received"
    with open(out, "wb") as sink:
        server = nc(lab, "server", "--tcp", "-l", "-v", "--recv-only", "5302", stdout=sink)
        assert "listening on [::]:5302 (TCP)" in listening(server)
        with open(big, "rb") as src:
            client = nc(lab, "client", "--subflows", "--json", "10.0.1.2", "5302", stdin=src)
            rc, err = finish(client)
        assert rc == 0, err
        assert finish(server)[0] == 0
    assert sha(out) == sha(big)
    assert "mptcplab nc: this connection fell back to plain TCP" in err.splitlines()
    final = json_lines(err)[-1]
    assert final["mptcp"] is False and final["fallback"] is True
    (only,) = final["subflows"]
    assert only["id"] is None and only["bytes_sent"] >= SIZE


def test_fallback_table_for_people(lab, tmp_path):
    server = nc(lab, "server", "--tcp", "-l", "-v", "5303")
    listening(server)
    client = nc(lab, "client", "--subflows", "10.0.1.2", "5303", stdin=subprocess.PIPE)
    rc, err = finish(client, input="hello\n")
    assert rc == 0 and finish(server)[0] == 0
    assert "final: connection fell back to plain TCP" in err
    assert "10.0.1.1:" in err and "10.0.1.2:5303" in err


def test_both_directions_at_once(lab, tmp_path):
    up, down = os.urandom(2_000_000), os.urandom(1_500_000)
    (tmp_path / "up").write_bytes(up)
    (tmp_path / "down").write_bytes(down)
    with open(tmp_path / "down", "rb") as sin, open(tmp_path / "got_up", "wb") as sout:
        server = nc(lab, "server", "-l", "-v", "5304", stdin=sin, stdout=sout)
        listening(server)
        with open(tmp_path / "up", "rb") as cin, open(tmp_path / "got_down", "wb") as cout:
            client = nc(lab, "client", "10.0.1.2", "5304", stdin=cin, stdout=cout)
            assert finish(client)[0] == 0
        assert finish(server)[0] == 0
    assert (tmp_path / "got_up").read_bytes() == up
    assert (tmp_path / "got_down").read_bytes() == down


def test_ipv6_from_a_chosen_source(lab, tmp_path):
    server = nc(lab, "server", "-l", "-v", "-6", "5305", stdout=subprocess.PIPE)
    listening(server)
    client = nc(lab, "client", "--json", "-s", "dead:beef:2::1", "dead:beef:2::2", "5305",
                stdin=subprocess.PIPE)
    rc, err = finish(client, input="over IPv6\n")
    assert rc == 0, err
    got, _ = server.communicate(timeout=30)
    assert got == "over IPv6\n"
    first = json_lines(err)[-1]["subflows"][0]
    assert first["id"] == 1
    assert first["local"].startswith("[dead:beef:2::1]:")
    assert first["remote"] == "[dead:beef:2::2]:5305"


# -- errors a newcomer meets -----------------------------------------------------------------

def run_nc(lab, node: str, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = nc(lab, node, *args)
    return finish(proc, timeout)


def one_line_error(err: str, text: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mptcplab: error: "), err
    assert text in lines[0], err


def test_port_in_use(lab):
    taken = lab["server"].socket(socket.AF_INET6, socket.SOCK_STREAM, 262)
    taken.bind(("::", 5306))
    taken.listen(1)
    try:
        rc, err = run_nc(lab, "server", "-l", "5306")
    finally:
        taken.close()
    assert rc == 1
    one_line_error(err, "cannot bind [::]:5306: address already in use")


def test_connection_refused_and_bad_addresses(lab):
    rc, err = run_nc(lab, "client", "10.0.1.2", "5307")
    assert rc == 1
    one_line_error(err, "connection to 10.0.1.2:5307 refused")
    rc, err = run_nc(lab, "client", "-s", "10.9.9.9", "10.0.1.2", "5307")
    assert rc == 3
    one_line_error(err, "10.9.9.9 is not an address here")


def test_usage_and_namespace_errors(lab):
    cli = [sys.executable, "-m", "mptcplab.cli", "nc"]
    for args, code, text in (
            (["10.0.1.2"], 2, "give HOST PORT"),
            (["10.0.1.2", "http"], 2, "'http' is not a port number"),
            (["-l", "1", "2", "3"], 2, "with -l give PORT"),
            (["--tcp", "--policy", "x", "10.0.1.2", "1"], 2, "--policy steers MPTCP"),
            (["--policy", "fullmesh", "10.0.1.2", "1"], 2,     # here: the host's own PM
             "name a lab node with -n LAB:NODE, or say --host"),
            (["-n", "mptl-nosuch-node", "10.0.1.2", "1"], 3, "no network namespace"),
            (["-n", f"{lab.id}:nosuch", "10.0.1.2", "1"], 3, "has no node 'nosuch'")):
        res = subprocess.run(cli + args, capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == code, (args, res.stderr)
        one_line_error(res.stderr, text)


def test_ctrl_c_while_listening(lab):
    server = nc(lab, "server", "-l", "-v", "5308")
    listening(server)
    server.send_signal(signal.SIGINT)
    rc, err = finish(server, 15)
    assert rc == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "mptcplab: interrupted"


def test_one_connection_the_next_is_refused(lab, tmp_path):
    """nc -l takes one connection; its listener stays open for that connection's joins, and
    a second client is reset rather than left hanging."""
    client = lab["client"]
    server = nc(lab, "server", "-l", "-v", "--recv-only", "5309", stdout=subprocess.PIPE)
    listening(server)
    first = client.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    second = client.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    try:
        first.settimeout(10)
        first.connect(("10.0.1.2", 5309))
        assert "connection from 10.0.1.1:" in server.stderr.readline()
        second.settimeout(10)
        # the reset may even reach the client before its connect() returns
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            second.connect(("10.0.1.2", 5309))
            second.sendall(b"x" * 100_000)
            second.recv(1)
        first.sendall(b"the first one\n")
        first.shutdown(socket.SHUT_WR)
        got, err = server.communicate(timeout=30)
    finally:
        first.close()
        second.close()
    assert server.returncode == 0, err
    assert got == "the first one\n"


def test_mptcp_listener_with_a_plain_tcp_client(lab):
    """The listener asked for MPTCP and the client offered none: the kernel hands nc a TCP
    socket, and nc says the connection fell back."""
    server = nc(lab, "server", "-l", "-v", "--recv-only", "--subflows", "5310",
                stdout=subprocess.PIPE)
    listening(server)
    client = nc(lab, "client", "--tcp", "10.0.1.2", "5310", stdin=subprocess.PIPE)
    assert finish(client, input="plain\n")[0] == 0
    got, err = server.communicate(timeout=30)
    assert server.returncode == 0 and got == "plain\n"
    assert "mptcplab nc: this connection fell back to plain TCP" in err
    assert "final: connection fell back to plain TCP" in err
