"""The userspace path manager through mptcplab.pm, with the kernel's `userspace_pm.sh` selftest
as the oracle: its checks re-expressed (announce, remove, subflow create/destroy both ways, v4,
v6 and mixed, MP_PRIO, listener events; a bad token or id is an error and sends nothing),
plus the errors a user meets (root).

Both hosts of a two-paths lab run the userspace PM (net.mptcp.path_manager=userspace), as the
selftest's two namespaces do; one IPv4 and one IPv6 connection stay open for the module.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import pytest
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.errors import ExitStatus
from mptcplab.pm import PathManager, PmError
from mptcplab.pm.events import Event
from mptcplab.topo import IPPROTO_MPTCP, SOL_MPTCP, Lab, LabHost, catalogue
from mptcplab.traffic import connect

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]
MPTCP_INFO = 1
APP4, APP6, NEW4 = 50002, 50004, 50003


def mptcpi_token(sock: socket.socket) -> int:
    return struct.unpack_from("=I", sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 48), 12)[0]


def collect(pm: PathManager, want: str | None = None, timeout: float = 10.0,
            quiet: float = 0.3) -> list[Event]:
    """Events until one of kind `want` arrived (and those right behind it), or, without
    `want`, until `quiet` s pass without any."""
    got: list[Event] = []
    end = time.monotonic() + timeout
    for ev in pm.events(timeout=timeout, idle=quiet if want is None else None):
        got.append(ev)
        if want is not None and ev.KIND == want:
            got += list(pm.events(idle=0.05))
            return got
        if time.monotonic() > end:
            break
    if want is not None:
        raise AssertionError(f"no {want} event; got {[e.NAME for e in got]}")
    return got


@dataclass
class Conn:
    client_token: int
    server_token: int
    client_port: int
    app_port: int


class Pair:
    """The lab, each side's PathManager (subscribed), and the two open connections."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.client: LabHost = lab["client"]
        self.server: LabHost = lab["server"]
        self.cpm = PathManager(self.client.fd)
        self.spm = PathManager(self.server.fd)
        self.cpm.subscribe()
        self.spm.subscribe()
        self.conns: dict[str, Conn] = {}
        self.created: dict[str, tuple[Event, Event]] = {}
        self.socks: list[socket.socket] = []

    def connect(self, v: str) -> None:
        fam, any_, dst, port = ((socket.AF_INET, "0.0.0.0", "10.0.1.2", APP4) if v == "v4"
                                else (socket.AF_INET6, "::", "dead:beef:1::2", APP6))
        lst = self.server.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((any_, port))
        lst.listen()
        cli = self.client.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        cli.connect((dst, port))
        srv, _ = lst.accept()
        cli.sendall(b"x" * 100)                   # the client becomes fully established
        srv.recv(100)
        self.socks += [lst, cli, srv]
        cev = collect(self.cpm, "established")
        sev = collect(self.spm, "established")
        c_created = next(e for e in cev if e.KIND == "created")
        s_created = next(e for e in sev if e.KIND == "created")
        self.created[v] = (c_created, s_created)
        assert mptcpi_token(cli) == c_created.token and mptcpi_token(srv) == s_created.token
        self.conns[v] = Conn(c_created.token, s_created.token, cli.getsockname()[1], port)

    def drain(self) -> None:
        collect(self.cpm, quiet=0.1)
        collect(self.spm, quiet=0.1)

    def listen(self, host: LabHost, addr: str, port: int) -> socket.socket:
        """An MPTCP listener for joins at addr:port (pm_nl_ctl's `listen`); where the
        application's listener has the port already, that one takes the joins."""
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = host.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError:
            assert port in (APP4, APP6), f"{addr}:{port} is taken"
        else:
            s.listen()
        return s


@pytest.fixture(scope="module")
def pair():
    topo = catalogue.get("two-paths", rate=None)
    for node in topo.nodes.values():
        node.endpoints.clear()
        node.mptcp["path_manager"] = "userspace"
    with Lab(topo) as lab:
        p = Pair(lab)
        p.connect("v4")
        p.connect("v6")
        yield p
        for s in p.socks:
            s.close()
        p.cpm.close()
        p.spm.close()


def test_connections_carry_tokens_and_sides(pair):
    """Established IPv4/IPv6 connections: tokens equal MPTCP_INFO's, server side flagged."""
    for v, fam, caddr in (("v4", socket.AF_INET, "10.0.1.1"),
                          ("v6", socket.AF_INET6, "dead:beef:1::1")):
        c, s = pair.created[v]
        assert (c.server_side, s.server_side) == (False, True)
        assert (c.family, s.family) == (fam, fam)
        assert (c.saddr, c.sport, c.dport) == (caddr, pair.conns[v].client_port,
                                               pair.conns[v].app_port)
        assert (s.daddr, s.dport) == (caddr, pair.conns[v].client_port)
        assert (c.loc_id, c.rem_id) == (0, 0)          # sent, though the spec lists none
        assert not c.deny_join_id0


def test_announce(pair):
    c4, c6 = pair.conns["v4"], pair.conns["v6"]
    cpm, spm = pair.cpm, pair.spm
    pair.drain()
    with pytest.raises(PmError) as exc:                       # invalid token
        cpm.announce(c4.client_token - 1, "10.0.2.1", 10, dev="eth1")
    assert exc.value.status == ExitStatus.BAD_INPUT and exc.value.extack == "invalid token"
    assert collect(spm) == []                                 # ... and no event

    cases = [  # who announces, token, address, id, port -> expected dport at the peer
        (cpm, spm, c4.client_token, c4.server_token, "10.0.2.1", 10, None, c4.client_port),
        (cpm, spm, c6.client_token, c6.server_token, "dead:beef:2::1", 10, None,
         c6.client_port),
        (cpm, spm, c4.client_token, c4.server_token, "10.0.2.1", 11, NEW4, NEW4),
        (spm, cpm, c4.server_token, c4.client_token, "10.0.2.2", 20, None, APP4),
        (spm, cpm, c6.server_token, c6.client_token, "dead:beef:2::2", 20, None, APP6),
        (spm, cpm, c4.server_token, c4.client_token, "10.0.2.2", 21, NEW4, NEW4),
    ]
    for me, peer, token, peer_token, addr, id_, port, dport in cases:
        me.announce(token, addr, id_, port=port)
        (ev,) = [e for e in collect(peer, "announced") if e.KIND == "announced"]
        assert (ev.token, ev.daddr, ev.rem_id, ev.dport) == (peer_token, addr, id_, dport)
        assert ev.family is None                  # ANNOUNCED carries no family attribute
    for me, _, token, _, _, id_, _, _ in cases:
        me.remove(token, id_)
    pair.drain()


def test_remove(pair):
    c4, c6 = pair.conns["v4"], pair.conns["v6"]
    cpm, spm = pair.cpm, pair.spm
    cpm.announce(c4.client_token, "10.0.2.1", 30)
    cpm.announce(c6.client_token, "dead:beef:2::1", 30)
    spm.announce(c4.server_token, "10.0.2.2", 31)
    pair.drain()
    with pytest.raises(PmError) as exc:                       # invalid token
        cpm.remove(c4.client_token - 1, 30)
    assert exc.value.extack == "invalid token"
    with pytest.raises(PmError) as exc:                       # invalid id
        cpm.remove(c4.client_token, 99)
    assert exc.value.extack == "address with id 99 not found"
    assert exc.value.status == ExitStatus.BAD_INPUT
    assert collect(spm) == []
    for me, peer, token, peer_token, id_ in (
            (cpm, spm, c4.client_token, c4.server_token, 30),
            (cpm, spm, c6.client_token, c6.server_token, 30),
            (spm, cpm, c4.server_token, c4.client_token, 31)):
        me.remove(token, id_)
        (ev,) = [e for e in collect(peer, "removed") if e.KIND == "removed"]
        assert (ev.token, ev.rem_id) == (peer_token, id_)
    pair.drain()


@pytest.mark.parametrize("direction, v, port", [
    ("server->client", "v4", None), ("server->client", "v6", None),
    ("server->client", "v4", NEW4), ("client->server", "v4", None),
    ("client->server", "v6", None), ("client->server", "v4", NEW4)])
def test_subflow_create_and_destroy(pair, direction, v, port):
    conn = pair.conns[v]
    if direction == "server->client":
        me, peer, host_peer = pair.spm, pair.cpm, pair.client
        token, peer_token = conn.server_token, conn.client_token
        laddr, raddr = ("10.0.2.2", "10.0.2.1") if v == "v4" else ("dead:beef:2::2",
                                                                   "dead:beef:2::1")
        rport = port or conn.client_port
    else:
        me, peer, host_peer = pair.cpm, pair.spm, pair.server
        token, peer_token = conn.client_token, conn.server_token
        laddr, raddr = ("10.0.2.1", "10.0.2.2") if v == "v4" else ("dead:beef:2::1",
                                                                   "dead:beef:2::2")
        rport = port or conn.app_port
    listener = pair.listen(host_peer, raddr, rport)
    peer.announce(peer_token, raddr, 40, port=port)
    pair.drain()
    me.subflow_create(token, laddr, raddr, rport, local_id=23)
    est = next(e for e in collect(me, "sub_established") if e.KIND == "sub_established")
    fam = socket.AF_INET6 if ":" in laddr else socket.AF_INET
    assert (est.token, est.family, est.saddr, est.daddr, est.dport, est.loc_id, est.rem_id) == \
        (token, fam, laddr, raddr, rport, 23, 40)
    assert est.error is None                                  # "'error' should not be set"
    listener.close()
    pair.drain()
    me.subflow_destroy(token, laddr, est.sport, raddr, rport)
    closed = next(e for e in collect(me, "sub_closed") if e.KIND == "sub_closed")
    assert (closed.token, closed.family, closed.saddr, closed.sport, closed.daddr,
            closed.dport, closed.loc_id, closed.rem_id) == (
        token, fam, laddr, est.sport, raddr, rport, 23, 40)
    with pytest.raises(PmError) as exc:                       # gone now
        me.subflow_destroy(token, laddr, est.sport, raddr, rport)
    assert exc.value.extack == "subflow not found" and exc.value.status == ExitStatus.BAD_INPUT
    peer.remove(peer_token, 40)
    pair.drain()


def test_ipv4_subflow_on_an_ipv6_connection(pair):
    c6 = pair.conns["v6"]
    listener = pair.listen(pair.server, "10.0.2.2", APP6)
    pair.spm.announce(c6.server_token, "10.0.2.2", 50, dev="eth1")
    (ann,) = [e for e in collect(pair.cpm, "announced") if e.KIND == "announced"]
    assert (ann.token, ann.daddr, ann.rem_id, ann.dport) == (c6.client_token, "10.0.2.2", 50,
                                                              APP6)
    pair.cpm.subflow_create(c6.client_token, "10.0.2.1", "10.0.2.2", APP6, local_id=23)
    est = next(e for e in collect(pair.cpm, "sub_established") if e.KIND == "sub_established")
    assert (est.token, est.family, est.saddr, est.daddr, est.loc_id, est.rem_id) == (
        c6.client_token, socket.AF_INET, "10.0.2.1", "10.0.2.2", 23, 50)
    listener.close()
    pair.cpm.subflow_destroy(c6.client_token, "10.0.2.1", est.sport, "10.0.2.2", APP6)
    assert any(e.KIND == "sub_closed" for e in collect(pair.cpm, "sub_closed"))
    pair.spm.remove(c6.server_token, 50)
    pair.drain()


def test_mp_prio(pair):
    c4 = pair.conns["v4"]
    before = {n: pair.lab[n].counters() for n in ("client", "server")}
    pair.drain()
    pair.cpm.set_flags(c4.client_token, "10.0.1.1", "10.0.1.2", backup=True,
                       local_port=c4.client_port, remote_port=APP4)
    prio = next(e for e in collect(pair.spm, "sub_priority") if e.KIND == "sub_priority")
    assert (prio.token, prio.backup, prio.saddr, prio.daddr) == (c4.server_token, 1,
                                                                 "10.0.1.2", "10.0.1.1")
    (pair.lab["client"].counters() - before["client"]).expect(MPTcpExtMPPrioTx=1)
    (pair.lab["server"].counters() - before["server"]).expect(MPTcpExtMPPrioRx=1)
    with pytest.raises(PmError) as exc:                       # no such subflow
        pair.cpm.set_flags(c4.client_token, "10.0.1.1", "10.0.9.9", backup=True)
    assert exc.value.extack == "subflow not found"
    pair.cpm.set_flags(c4.client_token, "10.0.1.1", "10.0.1.2", backup=False)
    collect(pair.spm, "sub_priority")


def test_listener_events(pair):
    pair.drain()
    c4 = pair.conns["v4"]
    listener = pair.listen(pair.client, "10.0.2.1", c4.client_port)
    (ev,) = [e for e in collect(pair.cpm, "listener_created") if e.KIND == "listener_created"]
    assert (ev.family, ev.saddr, ev.sport, ev.token) == (socket.AF_INET, "10.0.2.1",
                                                         c4.client_port, None)
    listener.close()
    (ev,) = [e for e in collect(pair.cpm, "listener_closed") if e.KIND == "listener_closed"]
    assert (ev.family, ev.saddr, ev.sport) == (socket.AF_INET, "10.0.2.1", c4.client_port)


def test_bad_input_is_refused_in_one_line(pair):
    c4 = pair.conns["v4"]
    pm = pair.cpm
    pair.drain()
    cases = [
        (lambda: pm.subflow_create(c4.client_token, "10.0.2.1", "dead:beef:2::2", APP4),
         ExitStatus.BAD_INPUT, "families mismatch"),
        (lambda: pm.subflow_create(c4.client_token + 1, "10.0.2.1", "10.0.2.2", APP4),
         ExitStatus.BAD_INPUT, "invalid token"),
        (lambda: pm.announce(c4.client_token, "10.0.2.1", 7, dev="wlan9"),
         ExitStatus.BAD_INPUT, "no interface 'wlan9'"),
        (lambda: pm.announce(c4.client_token, "10.0.2.1", 0), ExitStatus.BAD_INPUT,
         "address id 0 out of range 1-255"),
        (lambda: pm.subflow_create(c4.client_token, "10.0.2.1", "10.0.2.2", 0),
         ExitStatus.BAD_INPUT, "remote port 0 out of range"),
        (lambda: pm.subflow_create(c4.client_token, "10.0.2.x", "10.0.2.2", APP4),
         ExitStatus.BAD_INPUT, "not an IPv4 or IPv6 address"),
    ]
    for call, status, words in cases:
        with pytest.raises(Exception) as exc:
            call()
        assert exc.value.status == status and words in str(exc.value), str(exc.value)
        assert "\n" not in str(exc.value)
    assert collect(pm) == [] and collect(pair.spm) == []


def test_userspace_verbs_on_a_kernel_pm_connection_change_nothing():
    """With the in-kernel PM selected, userspace verbs are refused with the kernel's reason."""
    with Lab(catalogue.get("two-paths", rate=None)) as lab:
        client, server = lab["client"], lab["server"]
        pm = client.pm
        pm.subscribe()                                     # before the connection's events
        with connect(client, server, "10.0.1.2") as conn:
            conn.upload(b"x")
            collect(pm, "sub_established")
            token = mptcpi_token(conn.client)
            before = client.counters()
            for call in (lambda: pm.announce(token, "10.0.2.1", 5),
                         lambda: pm.remove(token, 1),
                         lambda: pm.subflow_create(token, "10.0.2.1", "10.0.2.2", 5000,
                                                   local_id=5)):
                with pytest.raises(PmError) as exc:
                    call()
                assert exc.value.status == ExitStatus.BAD_INPUT
                assert "userspace PM not selected" in exc.value.extack, exc.value.extack
            delta = client.counters() - before
            delta.expect(MPTcpExtAddAddrTx=0, MPTcpExtRmAddrTx=0, MPTcpExtMPJoinSynTx=0)
            assert collect(pm) == []


def test_the_command_line_drives_the_same_verbs(pair):
    """announce, subflow create/show/destroy, set-flags, remove and endpoint show token T
    from the shell, on the lab's client named LAB:NODE; tokens as `pm monitor` prints them."""
    import json
    import subprocess
    import sys

    c4 = pair.conns["v4"]
    node = f"{pair.lab.id}:client"
    tok = f"{c4.client_token:08x}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "mptcplab.cli", "pm", *args, "-n", node],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        return res

    pair.drain()
    cli("announce", "10.0.2.1", "id", "60", "token", tok)
    (ann,) = [e for e in collect(pair.spm, "announced") if e.KIND == "announced"]
    assert (ann.token, ann.rem_id, ann.daddr) == (c4.server_token, 60, "10.0.2.1")
    # the announced address, with its id: a subflow from it (the kernel wants the same id)
    cli("subflow", "create", "10.0.2.1", f"10.0.2.2:{APP4}", "id", "60", "backup",
        "token", f"0x{tok}")
    est = next(e for e in collect(pair.cpm, "sub_established") if e.KIND == "sub_established")
    srv = next(e for e in collect(pair.spm, "sub_established") if e.KIND == "sub_established")
    assert (est.loc_id, srv.rem_id, srv.backup) == (60, 60, 1)       # MP_JOIN with B set
    shown = json.loads(cli("subflow", "show", "token", tok, "--json").stdout)
    mine = [s for s in shown if s["sport"] == est.sport]
    assert len(mine) == 1 and (mine[0]["loc_id"], mine[0]["backup"]) == (60, True)
    assert mine[0]["token"] == c4.client_token
    addrs = json.loads(cli("endpoint", "show", "token", tok, "--json").stdout)
    assert (60, "10.0.2.1") in {(a["id"], a["addr"]) for a in addrs}
    assert {(a["id"], a["addr"]) for a in pair.cpm.addresses(c4.client_token)} == \
        {(a["id"], a["addr"]) for a in addrs}
    cli("set-flags", f"10.0.2.1:{est.sport}", f"10.0.2.2:{APP4}", "nobackup", "token", tok)
    prio = next(e for e in collect(pair.spm, "sub_priority") if e.KIND == "sub_priority")
    assert (prio.backup, prio.dport) == (0, est.sport)
    cli("subflow", "destroy", f"10.0.2.1:{est.sport}", f"10.0.2.2:{APP4}", "token", tok)
    assert any(e.KIND == "sub_closed" for e in collect(pair.cpm, "sub_closed"))
    # destroying the subflow made the kernel forget the local address it used (id 60)
    assert 60 not in {a["id"] for a in pair.cpm.addresses(c4.client_token)}
    cli("announce", "10.0.2.1", "id", "62", "token", tok)
    collect(pair.spm, "announced")
    cli("remove", "id", "62", "token", tok)
    (rem,) = [e for e in collect(pair.spm, "removed") if e.KIND == "removed"]
    assert (rem.token, rem.rem_id) == (c4.server_token, 62)
    pair.drain()


def test_a_refused_subflow_closes_with_its_error_and_device(pair):
    """A join to a port nobody listens on: SF_CLOSED carries sk_err (ECONNREFUSED) and, the
    subflow being bound to a device, its ifindex."""
    import errno

    c4 = pair.conns["v4"]
    pair.drain()
    # the kernel may still know 10.0.2.2 under an id from an earlier test: reuse that one
    known = {a["addr"]: a["id"] for a in pair.spm.addresses(c4.server_token)
             if not a["port"]}
    lid = known.get("10.0.2.2", 70)
    pair.spm.subflow_create(c4.server_token, "10.0.2.2", "10.0.2.1", 6999, local_id=lid,
                            dev="eth1")
    closed = next(e for e in collect(pair.spm, "sub_closed") if e.KIND == "sub_closed")
    eth1 = pair.server.ipr.link_lookup(ifname="eth1")[0]
    assert (closed.error, closed.if_idx, closed.dport, closed.loc_id) == (
        errno.ECONNREFUSED, eth1, 6999, lid)
    from mptcplab.report.pm import event_line

    assert event_line(closed).endswith(f"dport=6999 backup=0 error=111 ifindex={eth1}")
    pair.drain()
