"""The MPTCP socket options decoded on live lab connections, each value held against an
independent reader: `ss -Mni` / `ss -tni` (iproute2's printer), the kernel's inet_diag path
(mptcplab.sockdiag), and what the application itself moved and when."""

from __future__ import annotations

import socket
import time
from functools import partial

import pytest
from ss_text import SS_MPTCP_KEYS, seq_base, ss, ss_version, ulp_tokens
from topo_fixtures import needs_root, needs_ss, root_guard  # noqa: F401  (module fixture)

from mptcplab import sockdiag, sockopt, traffic
from mptcplab.errors import BadInput
from mptcplab.poll import until
from mptcplab.sockopt import Fallback, MptcpInfo, NotMptcp, TcpInfo
from mptcplab.topo import Lab, catalogue

pytestmark = [needs_root, needs_ss, pytest.mark.usefixtures("root_guard")]

UP, DOWN = 300_000, 120_000
IDLE = 0.3


@pytest.fixture(scope="module")
def lab():
    with Lab(catalogue.get("two-paths")) as lab:
        yield lab


wait_for = partial(until, timeout=10.0, error=AssertionError)


class Moved:
    """A connection that moved UP bytes up and DOWN down, both subflows up, then went idle."""

    def __init__(self, lab, port: int, dst: str = "10.0.1.2") -> None:
        self.client_host, self.server_host = lab["client"], lab["server"]
        self._cm = traffic.connect(self.client_host, self.server_host, dst, port=port)
        self.conn = self._cm.__enter__()
        wait_for(lambda: len(sockopt.subflow_addrs(self.conn.client)) == 2, what="2 subflows")
        self.t_start = time.monotonic()
        assert self.conn.upload(traffic.pattern(UP)) == traffic.pattern(UP)
        assert self.conn.download(traffic.pattern(DOWN, 1)) == traffic.pattern(DOWN, 1)
        self.t_done = time.monotonic()
        for s in (self.conn.client, self.conn.server):
            wait_for(lambda s=s: (m := sockopt.mptcp_info(s)).mptcpi_bytes_acked
                     == m.mptcpi_bytes_sent, what="all data acked")
        self.t_acked = time.monotonic()     # nothing moves after this
        time.sleep(IDLE)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def moved(lab):
    m = Moved(lab, 5101)
    yield m
    m.close()


TIMERS = ("mptcpi_last_data_sent", "mptcpi_last_data_recv", "mptcpi_last_ack_recv")


def _without_timers(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMERS}


# -- mptcp_info ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["client", "server"])
def test_mptcp_info_equals_ss(moved, side):
    host = moved.client_host if side == "client" else moved.server_host
    sock = moved.conn.client if side == "client" else moved.conn.server
    info = sockopt.mptcp_info(sock)
    assert info.kernel_len == MptcpInfo.size() == 96
    local = "{}:{}".format(*sock.getsockname()[:2])
    (entry,) = [e for e in ss(host.run, "-Mni", "state", "established") if e.local == local]
    base = seq_base(ss_version(host.run))
    for key in SS_MPTCP_KEYS:
        ours = getattr(info, f"mptcpi_{key}")
        shown = entry.values.get(key)
        if key == "token":
            assert shown is not None and int(shown, 16) == ours
        elif key in ("write_seq", "snd_una", "rcv_nxt"):
            assert shown is not None and int(shown, base) == ours, key
        else:
            assert int(shown or 0) == ours, f"{key}: ss {shown or 0}, ours {ours}"
    # Keys a newer ss prints (bytes_sent, subflows_total, ...) are compared as well.
    for key, shown in entry.values.items():
        if key not in SS_MPTCP_KEYS and hasattr(info, f"mptcpi_{key}") \
                and not f"mptcpi_{key}".startswith("mptcpi_last_"):
            assert int(shown) == getattr(info, f"mptcpi_{key}"), key
    assert ("remote_key" in entry.words) == info.remote_key_received is True
    assert ("fallback" in entry.words) == info.fallback is False


def test_mptcp_info_counts_what_the_application_moved(moved):
    c, s = sockopt.mptcp_info(moved.conn.client), sockopt.mptcp_info(moved.conn.server)
    t_read = time.monotonic()
    assert (c.mptcpi_bytes_sent, c.mptcpi_bytes_acked, c.mptcpi_bytes_received) == (UP, UP, DOWN)
    assert (s.mptcpi_bytes_sent, s.mptcpi_bytes_acked, s.mptcpi_bytes_received) == (DOWN, DOWN, UP)
    assert c.mptcpi_retransmits == 0 and c.mptcpi_bytes_retrans == 0
    # Sequence numbers: what one side wrote is what the other acknowledged as received.
    assert c.mptcpi_write_seq == c.mptcpi_snd_una == s.mptcpi_rcv_nxt
    assert s.mptcpi_write_seq == s.mptcpi_snd_una == c.mptcpi_rcv_nxt
    # Two paths: the initial subflow and one join, on both sides.
    assert c.mptcpi_subflows_total == s.mptcpi_subflows_total == 2
    assert c.mptcpi_subflows == 1 and c.mptcpi_add_addr_accepted == 1
    # The server announces both its signal endpoints (IPv4 and IPv6); the client accepts one.
    assert s.mptcpi_add_addr_signal == s.mptcpi_add_addr_signal_max == 2
    assert c.mptcpi_csum_enabled == 0 and c.remote_key_received and not c.fallback
    # The timers count milliseconds since the data moved, which this test timed itself.
    for info in (c, s):
        for name in TIMERS:
            ms = getattr(info, name)
            assert (t_read - moved.t_acked) * 1000 - 10 <= ms \
                <= (t_read - moved.t_start) * 1000 + 10, f"{name} = {ms} ms"


def test_mptcp_info_equals_inet_diag(moved):
    """The same struct over the kernel's other path (mptcp_diag), read a moment later."""
    for host, sock in ((moved.client_host, moved.conn.client),
                       (moved.server_host, moved.conn.server)):
        ours = sockopt.mptcp_info(sock)
        (diag,) = [d for d in sockdiag.connections(host.fd)
                   if d.mptcp_info and d.mptcp_info.mptcpi_token == ours.mptcpi_token]
        assert _without_timers(diag.mptcp_info.as_dict()) == _without_timers(ours.as_dict())
        for name in TIMERS:
            assert 0 <= getattr(diag.mptcp_info, name) - getattr(ours, name) < 1000


def test_endpoint_counters_follow_the_path_manager(lab):
    """local_addr_max and endp_laminar_max count this namespace's endpoints live (in a lab of
    their own: the endpoints would change other tests' connections)."""
    with Lab(catalogue.get("two-paths")) as lab2:
        client, server = lab2["client"], lab2["server"]
        with traffic.connect(client, server, "10.0.1.2", port=5102) as conn:
            before = sockopt.mptcp_info(conn.client)
            assert (before.mptcpi_local_addr_max, before.mptcpi_endp_laminar_max) == (0, 0)
            client.pm.endpoint("add", addr="10.0.2.1", flags="subflow")
            laminar = 1 << 5    # MPTCP_PM_ADDR_FLAG_LAMINAR (6.18)
            client.pm.endpoint("add", addr="10.0.1.1", flags=laminar)
            client.pm.endpoint("add", addr="dead:beef:1::1", flags=laminar)
            after = sockopt.mptcp_info(conn.client)
            shown = {e["addr"]: e["flags"] for e in client.pm.endpoint("show")}
            assert len(shown) == 3
            assert after.mptcpi_local_addr_max == 1     # one "subflow" endpoint
            assert after.mptcpi_endp_laminar_max == 2


def test_checksum_shows_in_mptcp_info():
    with Lab(catalogue.get("two-paths", checksum=True)) as lab2, \
            traffic.connect(lab2["client"], lab2["server"], "10.0.1.2", port=5103) as conn:
        assert sockopt.mptcp_info(conn.client).mptcpi_csum_enabled == 1
        assert sockopt.mptcp_info(conn.server).mptcpi_csum_enabled == 1


# -- tcp_info per subflow --------------------------------------------------------------------

def _g(us: int) -> str:
    return f"{us / 1000:g}"


def _tcp_expectations(t: TcpInfo) -> dict[str, str]:
    """What ss's tcp_stats_print shows for these tcp_info values (only counters it prints
    unconditionally or that are non-zero here)."""
    out = {"rto": _g(t.tcpi_rto), "rtt": f"{_g(t.tcpi_rtt)}/{_g(t.tcpi_rttvar)}",
           "mss": str(t.tcpi_snd_mss), "pmtu": str(t.tcpi_pmtu), "rcvmss": str(t.tcpi_rcv_mss),
           "advmss": str(t.tcpi_advmss), "cwnd": str(t.tcpi_snd_cwnd),
           "wscale": f"{t.tcpi_snd_wscale},{t.tcpi_rcv_wscale}",
           "rcv_space": str(t.tcpi_rcv_space), "rcv_ssthresh": str(t.tcpi_rcv_ssthresh),
           "minrtt": _g(t.tcpi_min_rtt), "snd_wnd": str(t.tcpi_snd_wnd),
           "segs_out": str(t.tcpi_segs_out), "segs_in": str(t.tcpi_segs_in),
           "delivered": str(t.tcpi_delivered)}
    if t.tcpi_busy_time:
        out["busy"] = f"{t.tcpi_busy_time // 1000}ms"
    for key, value in (("bytes_sent", t.tcpi_bytes_sent), ("bytes_acked", t.tcpi_bytes_acked),
                       ("bytes_received", t.tcpi_bytes_received),
                       ("data_segs_out", t.tcpi_data_segs_out),
                       ("data_segs_in", t.tcpi_data_segs_in)):
        if value:
            out[key] = str(value)
    if t.tcpi_snd_ssthresh < 0xFFFF:
        out["ssthresh"] = str(t.tcpi_snd_ssthresh)
    if t.tcpi_ato:
        out["ato"] = _g(t.tcpi_ato)
    return out


@pytest.mark.parametrize("side", ["client", "server"])
def test_tcp_info_of_each_subflow_equals_ss(moved, side):
    host = moved.client_host if side == "client" else moved.server_host
    sock = moved.conn.client if side == "client" else moved.conn.server
    before = {e.local: e for e in ss(host.run, "-tni", "state", "established")}
    full = sockopt.full_info(sock)
    infos = sockopt.tcp_infos(sock)
    after = {e.local: e for e in ss(host.run, "-tni", "state", "established")}
    assert full.size_tcpinfo_kernel == TcpInfo.size() == 280
    assert len(full.subflows) == len(infos) == 2
    for sub, info in zip(full.subflows, infos):
        assert info.kernel_len == 280 and info.state == "ESTABLISHED"
        entry, later = before[str(sub.local)], after[str(sub.local)]
        assert entry.peer == str(sub.remote)
        for key, value in _tcp_expectations(info).items():
            assert entry.values.get(key) == value, f"subflow {sub.id} {key}: ss " \
                f"{entry.values.get(key)}, ours {value}"
        # MPTCP_TCPINFO and MPTCP_FULL_INFO read the same struct.
        assert _tcp_stable(sub.tcp_info) == _tcp_stable(info)
        # Idle timers: ours were read between the two ss runs.
        for key, name in (("lastsnd", "tcpi_last_data_sent"), ("lastrcv", "tcpi_last_data_recv"),
                          ("lastack", "tcpi_last_ack_recv")):
            assert int(entry.values[key]) <= getattr(info, name) <= int(later.values[key]), key


def test_tcp_info_equals_inet_diag(moved):
    """Every tcp_info field of each subflow, from the socket option and from inet_diag."""
    token = sockopt.mptcp_info(moved.conn.client).mptcpi_token
    diag = {d.local: d for d in sockdiag.subflows_of(moved.conn.client, token)}
    full = sockopt.full_info(moved.conn.client)
    assert len(diag) == len(full.subflows) == 2
    for sub in full.subflows:
        theirs = diag[sub.local].tcp_info
        assert theirs.kernel_len == sub.tcp_info.kernel_len == 280
        assert _tcp_stable(theirs) == _tcp_stable(sub.tcp_info)


def _tcp_stable(t: TcpInfo) -> dict:
    return {k: v for k, v in t.as_dict().items() if not k.startswith("tcpi_last_")}


def test_both_subflows_carried_data_and_sum_to_the_connection(moved):
    full = sockopt.full_info(moved.conn.client)
    sent = [s.tcp_info.tcpi_bytes_acked - 1 for s in full.subflows]   # minus the SYN
    assert all(b > 0 for b in sent), sent
    # Subflow-level bytes cover the connection's bytes (reinjections may add to them).
    assert sum(s.tcp_info.tcpi_bytes_sent for s in full.subflows) >= UP


# -- addresses, ids, FULL_INFO ---------------------------------------------------------------

@pytest.mark.parametrize("side", ["client", "server"])
def test_subflow_addresses_and_ids_equal_ss(moved, side):
    host = moved.client_host if side == "client" else moved.server_host
    sock = moved.conn.client if side == "client" else moved.conn.server
    addrs = sockopt.subflow_addrs(sock)
    full = sockopt.full_info(sock)
    info = sockopt.mptcp_info(sock)
    assert [(a.local, a.remote) for a in addrs] == [(s.local, s.remote) for s in full.subflows]
    assert full.num_subflows == 2 and [s.id for s in full.subflows] == [1, 2]
    assert full.size_sfinfo_kernel == 264
    assert _without_timers(full.mptcp_info.as_dict()) == _without_timers(info.as_dict())
    entries = {e.local: e for e in ss(host.run, "-tni", "state", "established")}
    first, joined = full.subflows
    # The subflow with id 1 is the MP_CAPABLE one, id 2 the MP_JOIN (ss's M/J flags).
    assert "M" in entries[str(first.local)].ulp["flags"].upper()
    assert "J" in entries[str(joined.local)].ulp["flags"].upper()
    for sub in full.subflows:
        e = entries[str(sub.local)]
        assert e.peer == str(sub.remote)
        _, _, token_loc, _ = ulp_tokens(e)
        assert token_loc == info.mptcpi_token
    assert str(joined.local).startswith("10.0.2.") and str(joined.remote).startswith("10.0.2.")


def test_sockdiag_subflows_equal_ss(moved):
    """The sock_diag reader (backup flags, address ids, tokens) against ss's own decode."""
    host, sock = moved.client_host, moved.conn.client
    token = sockopt.mptcp_info(sock).mptcpi_token
    diag = {str(d.local): d for d in sockdiag.subflows_of(sock, token)}
    entries = {e.local: e for e in ss(host.run, "-tni", "state", "established")}
    assert len(diag) == 2
    for local, d in diag.items():
        e = entries[local]
        assert e.ulp["flags"] == d.flag_letters
        assert ulp_tokens(e) == (d.token_rem, d.id_rem, d.token_loc, d.id_loc)
        assert not d.backup


def test_ipv6_connection_addresses(lab):
    with traffic.connect(lab["client"], lab["server"], "dead:beef:1::2", port=5104) as conn:
        wait_for(lambda: len(sockopt.subflow_addrs(conn.client)) == 2, what="2 subflows")
        full = sockopt.full_info(conn.client)
        first = full.subflows[0]
        assert first.local.family == socket.AF_INET6
        assert (first.local.addr, first.remote.addr) == ("dead:beef:1::1", "dead:beef:1::2")
        assert str(first.remote) == "[dead:beef:1::2]:5104"
        assert first.local.port == conn.client.getsockname()[1]
        entries = {e.local: e for e in ss(lab["client"].run, "-tni", "state", "established")}
        for sub in full.subflows:
            assert entries[str(sub.local)].peer == str(sub.remote)


def test_more_subflows_than_the_first_buffer(monkeypatch):
    """The readers grow their buffer when the kernel counts more subflows than they offered
    room for (8 by default; 2 here, against four-paths' four subflows)."""
    monkeypatch.setattr(sockopt, "_FIRST_ROOM", 2)
    with Lab(catalogue.get("four-paths")) as lab4, \
            traffic.connect(lab4["ns2"], lab4["ns1"], "10.0.1.1", port=5105) as conn:
        wait_for(lambda: sockopt.full_info(conn.client).num_subflows == 4, what="4 subflows")
        full = sockopt.full_info(conn.client)
        assert [s.id for s in full.subflows] == [1, 2, 3, 4]
        remotes = sorted(s.remote.addr for s in full.subflows)
        assert remotes == ["10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.4.1"]
        assert len(sockopt.tcp_infos(conn.client)) == 4
        assert len(sockopt.subflow_addrs(conn.client)) == 4


# -- what is not an MPTCP connection ---------------------------------------------------------

def test_fallback_is_said_in_words(lab):
    client, server = lab["client"], lab["server"]
    with traffic.connect(client, server, "10.0.1.2", port=5106,
                         proto=socket.IPPROTO_TCP) as plain:
        with pytest.raises(NotMptcp, match="not an MPTCP socket \\(protocol TCP\\)"):
            sockopt.mptcp_info(plain.client)
        assert sockopt.is_fallback(plain.client) and not sockopt.is_mptcp(plain.client)
        with pytest.raises(NotMptcp):
            sockopt.full_info(plain.client)
    # An MPTCP client against a plain TCP listener falls back.
    listener = server.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("0.0.0.0", 5107))
    listener.listen(1)
    sock = client.socket(socket.AF_INET, socket.SOCK_STREAM, sockopt.IPPROTO_MPTCP)
    sock.connect(("10.0.1.2", 5107))
    try:
        assert sockopt.is_fallback(sock) and sockopt.is_mptcp(sock)
        for reader in (sockopt.mptcp_info, sockopt.tcp_infos, sockopt.subflow_addrs,
                       sockopt.full_info):
            with pytest.raises(Fallback) as err:
                reader(sock)
            assert str(err.value).endswith("this connection fell back to plain TCP")
    finally:
        sock.close()
        listener.close()


def test_closed_socket_and_no_such_subflow(moved, lab):
    sock = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, sockopt.IPPROTO_MPTCP)
    sock.close()
    with pytest.raises(BadInput, match="the socket is closed"):
        sockopt.mptcp_info(sock)
    with pytest.raises(BadInput, match=r"no subflow with id 99 on this connection \(ids: 1, 2\)"):
        sockopt.full_info(moved.conn.client).subflow(99)


def test_unconnected_socket_has_no_subflows(lab):
    sock = lab["client"].socket(socket.AF_INET, socket.SOCK_STREAM, sockopt.IPPROTO_MPTCP)
    try:
        assert sockopt.mptcp_info(sock).mptcpi_token == 0
        assert sockopt.full_info(sock).subflows == []
        assert sockopt.tcp_infos(sock) == []
    finally:
        sock.close()
