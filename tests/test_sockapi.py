"""The old enhanced socket API on upstream (mptcplab.sockapi), each call checked against the
kernel's own view: `ss -tni` in both namespaces and the path manager's events."""

from __future__ import annotations

import socket
import time

import pytest
from ss_text import ss, ulp_tokens
from topo_fixtures import needs_root, needs_ss, root_guard  # noqa: F401  (module fixture)

from mptcplab import sockopt, traffic
from mptcplab.errors import BadInput, LabError
from mptcplab.pm import PathManager
from mptcplab.sockapi import InKernelPathManager, MptcpSocket, NotPerSubflow
from mptcplab.topo import Lab, catalogue

pytestmark = [needs_root, needs_ss, pytest.mark.usefixtures("root_guard")]


@pytest.fixture(scope="module")
def lab():
    """two-paths with the userspace path manager on the client: no subflow but the ones the
    application opens."""
    with Lab(catalogue.get("two-paths")) as lab:
        lab["client"].sysctl("net.mptcp.pm_type", 1)
        yield lab


def _subflows_in_ss(host, port: int) -> dict[str, object]:
    """local address -> ss entry, for the subflows of the connection to/from `port`."""
    return {e.local: e for e in ss(host.run, "-tni", "state", "established")
            if "token" in e.ulp and (e.local.endswith(f":{port}") or e.peer.endswith(f":{port}"))}


def _events(pm: PathManager, want: int, kind: str, token: int | None = None,
            timeout: float = 5.0) -> list:
    """Read events until `want` of `kind` (for `token`) arrived."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for ev in pm.events(timeout=max(0.01, deadline - time.monotonic()), idle=0.5):
            if ev.KIND == kind and (token is None or ev.token == token):
                got.append(ev)
                if len(got) == want:
                    break
    return got


def test_open_read_mark_and_close_a_subflow(lab):
    client, server = lab["client"], lab["server"]
    port = 5201
    with PathManager(netns=client.netns) as cpm, PathManager(netns=server.netns) as spm:
        cpm.subscribe()
        spm.subscribe()
        with traffic.connect(client, server, "10.0.1.2", port=port) as conn:
            m = MptcpSocket(conn.client)
            token = m.token
            (only,) = m.get_sub_ids()
            assert only.id == 1 and not only.backup
            # fully established once the server's first data-level ACK came back
            assert conn.upload(b"hello") == b"hello"
            assert m.get_sub_ids()[0].fully_established
            assert str(only.local) == "{}:{}".format(*conn.client.getsockname())

            # OPEN_SUB_TUPLE on path 2
            new = m.open_sub_tuple("10.0.2.1", "10.0.2.2")
            assert new.id == 2 and new.state == "ESTABLISHED" and new.fully_established
            (est,) = _events(cpm, 1, "sub_established", token)
            assert (est.saddr, est.sport, est.daddr, est.dport) == \
                (new.local.addr, new.local.port, "10.0.2.2", port)
            seen = _subflows_in_ss(client, port)
            assert set(seen) == {str(only.local), str(new.local)}
            assert seen[str(new.local)].peer == str(new.remote) == f"10.0.2.2:{port}"
            assert "J" in seen[str(new.local)].ulp["flags"].upper()
            assert ulp_tokens(seen[str(new.local)])[2] == token
            # the server sees the join on its side
            assert str(new.local) in {e.peer for e in _subflows_in_ss(server, port).values()}

            # GET_SUB_IDS and GET_SUB_TUPLE agree with FULL_INFO and ss
            assert [s.id for s in m.get_sub_ids()] == [1, 2]
            tup = m.get_sub_tuple(2)
            assert (tup.local, tup.remote) == (new.local, new.remote)

            # SUB_GETSOCKOPT TCP_INFO of subflow 2, after it carried data
            assert conn.upload(traffic.pattern(400_000)) == traffic.pattern(400_000)
            info = m.sub_getsockopt(2, socket.IPPROTO_TCP, socket.TCP_INFO)
            entry = _subflows_in_ss(client, port)[str(new.local)]
            assert info.state == "ESTABLISHED" and info.tcpi_bytes_acked > 1
            assert entry.values["mss"] == str(info.tcpi_snd_mss)
            assert entry.values["wscale"] == f"{info.tcpi_snd_wscale},{info.tcpi_rcv_wscale}"
            assert int(entry.values.get("segs_out", 0)) >= info.tcpi_segs_out - 2

            # the low_prio bit: SET_FLAGS sends MP_PRIO, the server gets SF_PRIO backup=1
            marked = m.set_backup(2)
            assert marked.backup_local and marked.backup
            assert "b" in _subflows_in_ss(client, port)[str(new.local)].ulp["flags"]
            server_token = sockopt.mptcp_info(conn.server).mptcpi_token
            (prio,) = _events(spm, 1, "sub_priority", server_token)
            assert prio.backup == 1 and prio.dport == new.local.port
            assert "B" in next(e for e in _subflows_in_ss(server, port).values()
                               if e.peer == str(new.local)).ulp["flags"]
            assert not m.set_backup(2, False).backup_local

            # CLOSE_SUB_ID
            m.close_sub_id(2)
            (closed,) = _events(cpm, 1, "sub_closed", token)
            assert (closed.saddr, closed.sport) == (new.local.addr, new.local.port)
            assert [s.id for s in m.get_sub_ids()] == [1]
            assert set(_subflows_in_ss(client, port)) == {str(only.local)}
            # the connection goes on over the initial subflow
            assert conn.download(b"still here") == b"still here"

            # ids are never reused: the next subflow is 3
            again = m.open_sub_tuple(("10.0.2.1", 0), ("10.0.2.2", port), backup=True)
            assert again.id == 3 and again.backup_local
            with pytest.raises(BadInput, match=r"no subflow with id 2 on this connection "
                                               r"\(ids: 1, 3\)"):
                m.close_sub_id(2)


def test_a_refused_join_is_an_error(lab):
    """The server accepts one extra subflow (its limit): a second join to it is reset."""
    client, server = lab["client"], lab["server"]
    with traffic.connect(client, server, "10.0.1.2", port=5202) as conn:
        m = MptcpSocket(conn.client)
        m.open_sub_tuple("10.0.2.1", "10.0.2.2")
        with pytest.raises(LabError, match="did not survive the join"):
            m.open_sub_tuple("10.0.2.1", "10.0.2.2")
        assert [s.id for s in m.get_sub_ids()] == [1, 2]


def test_per_subflow_setsockopt_says_what_upstream_cannot(lab):
    client, server = lab["client"], lab["server"]
    with traffic.connect(client, server, "10.0.1.2", port=5203) as conn:
        m = MptcpSocket(conn.client)
        m.open_sub_tuple("10.0.2.1", "10.0.2.2")
        with pytest.raises(NotPerSubflow, match="cannot set TCP_NODELAY on subflow 2 alone"):
            m.sub_setsockopt(2, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with pytest.raises(NotPerSubflow, match="cannot set option 9 at level 6 on one"):
            m.sub_setsockopt(2, socket.IPPROTO_TCP, 9, 1)     # TCP_DEFER_ACCEPT
        with pytest.raises(NotPerSubflow, match="reads only TCP_INFO per subflow, not "
                                                "TCP_CONGESTION"):
            m.sub_getsockopt(2, socket.IPPROTO_TCP, socket.TCP_CONGESTION)
        # what upstream does allow: the option on the MPTCP socket reaches every subflow
        algo = "cubic" if "bbr" in client.run(["ss", "-tni"]).stdout else "reno"
        m.sub_setsockopt(2, socket.IPPROTO_TCP, socket.TCP_CONGESTION, algo.encode(),
                         all_subflows=True)
        entries = [e for e in ss(client.run, "-tni", "state", "established")
                   if e.peer.endswith(":5203")]
        assert len(entries) == 2 and all(algo in e.words for e in entries)


def test_in_kernel_path_manager_is_said_plainly():
    with Lab(catalogue.get("two-paths")) as lab2, \
            traffic.connect(lab2["client"], lab2["server"], "10.0.1.2", port=5204) as conn:
        m = MptcpSocket(conn.client)
        ids = m.get_sub_ids()           # reading needs no path manager
        with pytest.raises(InKernelPathManager,
                           match="managed by the in-kernel path manager.*pm_type = 1"):
            m.open_sub_tuple("10.0.2.1", "10.0.2.2")
        with pytest.raises(InKernelPathManager):
            m.set_backup(ids[0].id)


def test_bad_sockets(lab):
    plain = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    with pytest.raises(sockopt.NotMptcp, match="not an MPTCP socket"):
        MptcpSocket(plain)
    plain.close()
    with pytest.raises(BadInput, match="the socket is closed"):
        MptcpSocket(plain)
    fresh = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, sockopt.IPPROTO_MPTCP)
    try:
        with pytest.raises(BadInput, match="not connected"):
            MptcpSocket(fresh).open_sub_tuple("10.0.2.1", "10.0.2.2")
    finally:
        fresh.close()
