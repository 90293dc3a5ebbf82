"""`mptcplab pm daemon` in lab topologies: each built-in policy opens the subflows it should
(seen in its log, in `ss`, in the MIB counters), a late daemon learns the connections already
open, an event overflow is detected and repaired from sock_diag, a policy file runs, and the
daemon puts the namespace back as it found it (root)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.errors import ExitStatus
from mptcplab.poll import until
from mptcplab.topo import IPPROTO_MPTCP, SOL_MPTCP, Lab, LabHost, catalogue
from mptcplab.traffic import Stream

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "pm.md"


class DaemonProc:
    """`mptcplab pm daemon --json` on a lab node, its records collected as they come."""

    def __init__(self, lab: Lab, node: str, *policy: str, extra: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mptcplab.cli", "pm", "daemon", "--json", "-n",
             f"{lab.id}:{node}", *extra, "--policy", *policy],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.records.append(json.loads(line))

    def wait(self, pred, what: str, timeout: float = 30.0) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                recs = list(self.records)
            if pred(recs):
                return recs
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for "
                                     f"{what}: {self.proc.stderr.read()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} in {timeout} s; records: {recs}")

    def started(self) -> DaemonProc:
        self.wait(lambda rs: any(r["action"] == "start" for r in rs), "start")
        return self

    def created(self, token: int, n: int) -> list[dict]:
        """Wait for n accepted subflow_create decisions on the connection."""
        return [r for r in self.wait(
            lambda rs: len([r for r in rs if r.get("token") == token and
                            r["action"] == "subflow_create" and r.get("ok")]) >= n,
            f"{n} subflows for {token:08x}")
            if r.get("token") == token and r["action"] == "subflow_create" and r.get("ok")]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(20)
        self._reader.join(5)
        return code


def mptcpi_token(sock: socket.socket) -> int:
    import struct

    return struct.unpack_from("=I", sock.getsockopt(SOL_MPTCP, 1, 48), 12)[0]


class Conns:
    """MPTCP connections client -> server, each fully established (the client sent data)."""

    def __init__(self, client: LabHost, server: LabHost, dst: str, port: int = 5000) -> None:
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.client, self.dst, self.port, self.fam = client, dst, port, fam
        self.lst = server.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lst.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        self.lst.listen(128)
        self.pairs: list[tuple[socket.socket, socket.socket]] = []

    def open(self, n: int = 1) -> list[int]:
        tokens = []
        for _ in range(n):
            c = self.client.socket(self.fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
            c.settimeout(10)
            c.connect((self.dst, self.port))
            s, _ = self.lst.accept()
            c.sendall(b"hello")
            s.recv(5)
            self.pairs.append((c, s))
            tokens.append(mptcpi_token(c))
        return tokens

    def close(self) -> None:
        for c, s in self.pairs:
            c.close()
            s.close()
        self.lst.close()


def client_subflows(client: LabHost) -> dict[int, list]:
    """token -> the client's subflows, from sock_diag (as `ss -ti` reads it)."""
    from mptcplab import sockdiag

    out: dict[int, list] = {}
    for s in sockdiag.subflows(client.fd):
        if s.state == sockdiag.TCP_ESTABLISHED:
            out.setdefault(s.token_loc, []).append(s)
    return out


wait_for = partial(until, timeout=20.0, error=AssertionError)


def lab_topology(name: str = "two-paths", **kw):
    topo = catalogue.get(name, rate=None, **kw) if name == "two-paths" else \
        catalogue.get(name, **kw)
    topo.nodes["server"].endpoints.clear()
    topo.nodes["server"].set_limits(subflows=8, add_addr_accepted=8)
    topo.nodes["client"].endpoints.clear()
    return topo


def test_subflows_n_spreads_source_ports_over_every_residue():
    """subflows 3: two more subflows per connection over the same pair, `sport mod 3` all
    different; the sysctl is switched while it runs and put back on SIGTERM."""
    with Lab(lab_topology()) as lab:
        client, server = lab["client"], lab["server"]
        assert client.sysctl("net.mptcp.path_manager") == "kernel"
        d = DaemonProc(lab, "client", "subflows", "3").started()
        assert client.sysctl("net.mptcp.path_manager") == "userspace"
        before = client.counters()
        conns = Conns(client, server, "10.0.1.2")
        tokens = conns.open(3)
        for t in tokens:
            made = d.created(t, 2)
            assert all("mod 3" in r["reason"] for r in made)
            assert all(r["since_created_ms"] < 5000 for r in made)
        subs = wait_for(lambda: (s := client_subflows(client)) and
                        all(len(s.get(t, ())) == 3 for t in tokens) and s, "3 subflows each")
        for t in tokens:
            assert sorted(s.local.port % 3 for s in subs[t]) == [0, 1, 2]
            assert {(s.local.addr, s.remote.addr) for s in subs[t]} == {("10.0.1.1", "10.0.1.2")}
        # `ss -M` (iproute2) counts two additional subflows on each connection
        ss = client.run(["ss", "-MniH"]).stdout
        assert len(re.findall(r"\bsubflows:2\b", ss)) == 3, ss
        (client.counters() - before).expect(MPTcpExtMPJoinSynAckRx=6)
        assert d.stop() == 0
        recs = d.records
        assert recs[-1]["action"] == "stop" and recs[-1]["errors"] == 0
        assert client.sysctl("net.mptcp.path_manager") == "kernel"       # put back
        conns.close()


def test_ndiffports_over_ipv6_and_server_side_is_left_alone():
    with Lab(lab_topology()) as lab:
        client, server = lab["client"], lab["server"]
        dc = DaemonProc(lab, "client", "ndiffports", "2").started()
        ds = DaemonProc(lab, "server", "ndiffports", "2").started()
        conns = Conns(client, server, "dead:beef:1::2")
        (token,) = conns.open(1)
        dc.created(token, 1)
        subs = wait_for(lambda: len(client_subflows(client).get(token, ())) == 2 and
                        client_subflows(client)[token], "2 subflows")
        assert {(s.local.addr, s.remote.addr) for s in subs} == {("dead:beef:1::1", "dead:beef:1::2")}
        assert len({s.local.port for s in subs}) == 2
        skip = ds.wait(lambda rs: any(r["action"] == "skip" for r in rs), "server skip")
        assert any("server side" in r["reason"] for r in skip if r["action"] == "skip")
        assert not any(r["action"] == "subflow_create" for r in ds.records)
        assert dc.stop() == 0 and ds.stop() == 0
        conns.close()


def test_fullmesh_follows_announcements_and_local_addresses():
    """Local x remote: the client's 2 addresses x the server's own and its announced one;
    an address added later gets its subflows, and loses them when it goes."""
    topo = lab_topology()
    topo.nodes["server"].endpoint("10.0.2.2", "signal")
    topo.nodes["server"].endpoint("dead:beef:2::2", "signal")     # not for an IPv4 connection
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        d = DaemonProc(lab, "client", "fullmesh").started()
        conns = Conns(client, server, "10.0.1.2")
        (token,) = conns.open(1)

        def pairs() -> set[tuple[str, str]]:
            return {(s.local.addr, s.remote.addr) for s in client_subflows(client).get(token, ())}

        want = {(a, b) for a in ("10.0.1.1", "10.0.2.1") for b in ("10.0.1.2", "10.0.2.2")}
        wait_for(lambda: pairs() == want, f"subflows {want}")
        assert any("peer announced 10.0.2.2" in r.get("reason", "") for r in d.records)
        client.run(["ip", "addr", "add", "10.0.1.11/24", "dev", "eth0"]).check()
        wait_for(lambda: pairs() == want | {("10.0.1.11", "10.0.1.2"),
                                            ("10.0.1.11", "10.0.2.2")}, "subflows of .11")
        client.run(["ip", "addr", "del", "10.0.1.11/24", "dev", "eth0"]).check()
        wait_for(lambda: pairs() == want, "subflows of .11 gone")
        assert d.stop() == 0
        assert not [r for r in d.records if r.get("ok") is False], d.records
        conns.close()


def test_a_late_daemon_learns_the_connections_already_open():
    """Connections opened under the userspace PM before any daemon ran (mptcpd never learns
    those) get their subflows when the daemon starts; kernel-PM ones are left to the kernel."""
    topo = lab_topology()
    with Lab(topo) as lab:
        client, server = lab["client"], lab["server"]
        kernel_conns = Conns(client, server, "10.0.1.2", port=5001)
        (kernel_token,) = kernel_conns.open(1)
        client.sysctl("net.mptcp.path_manager", "userspace")
        conns = Conns(client, server, "10.0.1.2")
        tokens = conns.open(2)
        assert client_subflows(client)[tokens[0]][0].id_loc == 0          # only the first
        d = DaemonProc(lab, "client", "subflows", "2").started()
        learned = d.wait(lambda rs: any(r["action"] == "learned" for r in rs), "learned")
        (rec,) = [r for r in learned if r["action"] == "learned"]
        assert sorted(rec["tokens"]) == sorted(f"{t:08x}" for t in (*tokens, kernel_token))
        for t in tokens:
            d.created(t, 1)
        wait_for(lambda: all(len(client_subflows(client).get(t, ())) == 2 for t in tokens),
                 "2 subflows each")
        assert any(r["action"] == "ignore" and r["token"] == kernel_token for r in d.records)
        assert len(client_subflows(client)[kernel_token]) == 1
        assert d.stop() == 0
        # the daemon found `userspace` and leaves `userspace`
        assert client.sysctl("net.mptcp.path_manager") == "userspace"
        conns.close()
        kernel_conns.close()


def test_event_overflow_is_detected_and_repaired_from_a_dump():
    """A stopped daemon (SIGSTOP) with a tiny event buffer misses events while 30
    connections open (ENOBUFS). It must say so, resync from sock_diag and still give every
    connection its subflow."""
    with Lab(lab_topology()) as lab:
        client, server = lab["client"], lab["server"]
        d = DaemonProc(lab, "client", "subflows", "2", extra=("--rcvbuf", "2048")).started()
        d.proc.send_signal(signal.SIGSTOP)
        try:
            conns = Conns(client, server, "10.0.1.2")
            tokens = conns.open(30)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        d.wait(lambda rs: any(r["action"] == "overflow" for r in rs), "overflow")
        for t in tokens:
            d.created(t, 1)
        wait_for(lambda: all(len(client_subflows(client).get(t, ())) == 2 for t in tokens),
                 "2 subflows each")
        creates = Counter(r["token"] for r in d.records if r["action"] == "subflow_create"
                          and r.get("ok"))
        assert all(creates[t] == 1 for t in tokens), creates      # none twice
        assert d.stop() == 0
        stop = d.records[-1]
        assert stop["enobufs"] >= 1 and stop["resyncs"] >= 1
        conns.close()


def doc_example() -> str:
    """The complete example policy of docs/pm.md (the first python block after its
    `## Writing a policy` heading)."""
    text = DOCS.read_text()
    section = text[text.index("## Writing a policy"):]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "docs/pm.md lost its example policy"
    return m.group(1)


def test_the_documented_example_policy_runs(tmp_path):
    """docs/pm.md's example, as a --policy FILE.py on the phone topology: one more subflow
    over the cellular interface, a backup (MP_JOIN with B set)."""
    policy = tmp_path / "every_interface.py"
    policy.write_text(doc_example())
    with Lab(lab_topology("wifi-cellular")) as lab:
        client, server = lab["client"], lab["server"]
        before = server.counters()
        d = DaemonProc(lab, "client", str(policy), "wwan").started()
        conns = Conns(client, server, "10.0.3.1")
        (token,) = conns.open(1)
        (made,) = d.created(token, 1)
        assert (made["local"], made["backup"]) == ("10.0.2.1", True)
        wait_for(lambda: len(client_subflows(client).get(token, ())) == 2, "2 subflows")
        (server.counters() - before).expect(MPTcpExtMPJoinSynBackupRx=1)
        assert d.stop(signal.SIGINT) == 0                    # Ctrl-C stops it just as well
        conns.close()


def test_a_broken_policy_is_one_line_and_the_namespace_is_put_back(tmp_path):
    with Lab(lab_topology("wifi-cellular")) as lab:
        client = lab["client"]
        d = DaemonProc(lab, "client", "backup-preference", "wlan0", "wlan9")
        assert d.proc.wait(30) == ExitStatus.BAD_INPUT
        err = d.proc.stderr.read()
        assert err == "mptcplab: error: backup-preference: no interface 'wlan9' in this " \
                      "namespace\n"
        assert client.sysctl("net.mptcp.path_manager") == "kernel"
        bad = tmp_path / "bad.py"
        bad.write_text("from mptcplab.pm.policy import Policy\nclass P(Policy):\n"
                       "    def on_established(self, conn, event):\n        1 / 0\n")
        d = DaemonProc(lab, "client", str(bad)).started()
        conns = Conns(client, lab["server"], "10.0.3.1")
        conns.open(1)
        recs = d.wait(lambda rs: any(r["action"] == "error" for r in rs), "the error record")
        err_rec = next(r for r in recs if r["action"] == "error")
        assert "ZeroDivisionError" in err_rec["reason"]
        assert d.proc.poll() is None                         # a policy bug does not kill it
        assert d.stop() == 0
        conns.close()


def tx(client: LabHost) -> dict[str, int]:
    return {ln.get_attr("IFLA_IFNAME"): ln.get_attr("IFLA_STATS64")["tx_bytes"]
            for ln in client.ipr.get_links()}


def test_backup_preference_moves_data_when_the_preferred_link_fails_and_back():
    """A bulk upload from the phone: over WiFi while it works, over cellular (the backup
    subflow turned normal) once WiFi loses its carrier, back over WiFi when it returns, the
    cellular subflow then silent. Bytes per interface are read every 100 ms."""
    topo = lab_topology("wifi-cellular", wifi_rate="20mbit", cell_rate="10mbit")
    with Lab(topo) as lab:
        client, router, server = lab["client"], lab["router"], lab["server"]
        d = DaemonProc(lab, "client", "backup-preference", "wlan0", "wwan0").started()
        conns = Conns(client, server, "10.0.3.1")
        (token,) = conns.open(1)
        (made,) = d.created(token, 1)
        assert (made["local"], made["backup"]) == ("10.0.2.1", True)
        sock, peer = conns.pairs[0]
        sock.settimeout(None)
        upload = Stream(sock, peer, b"u" * 65536)
        window: list[dict[str, int]] = [tx(client)]

        def share(iface: str, span: int = 5) -> tuple[float, int]:
            """The interface's share of the last `span` samples' bytes, and the total."""
            window.append(tx(client))
            if len(window) <= span:
                return 0.0, 0
            a, b = window[-span - 1], window[-1]
            moved = {k: b[k] - a[k] for k in ("wlan0", "wwan0")}
            total = sum(moved.values())
            return (moved[iface] / total if total else 0.0), total

        def phase(iface: str, what: str, timeout: float = 15.0) -> float:
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                time.sleep(0.1)
                frac, total = share(iface)
                if frac > 0.95 and total > 200_000:
                    return time.monotonic() - t0
            raise AssertionError(f"{what}: {iface} never carried 95% of 0.5 s of data")

        try:
            phase("wlan0", "at first")
            router.run(["ip", "link", "set", "eth0", "down"]).check()   # WiFi lost
            moved_off = phase("wwan0", "after WiFi went down")
            router.run(["ip", "link", "set", "eth0", "up"]).check()     # WiFi back
            moved_back = phase("wlan0", "after WiFi came back")
        finally:
            upload.stop(timeout=5)
            conns.close()
        actions = [(r["action"], r.get("subflow", "")) for r in d.records
                   if r["action"] in ("link_down", "link_up", "set_backup", "set_nobackup")]
        assert ("link_down", "") in actions and ("link_up", "") in actions
        down = actions.index(("link_down", ""))
        assert actions[down + 1][0] == "set_nobackup" and "10.0.2.1" in actions[down + 1][1]
        up = actions.index(("link_up", ""))
        assert ("set_backup", ) == actions[up + 2][:1] and "10.0.2.1" in actions[up + 2][1]
        assert moved_off < 10 and moved_back < 10
        assert d.stop() == 0
