"""`mptcplab nc --policy`: the old "stream over WiFi, keep 3G as a backup" netcat, with the
path-manager daemon's backup-preference policy steering nc's own connection in the
wifi-cellular lab. Checked against the interfaces' own counters and the namespace's sysctl."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from test_nc import finish, json_lines, listening, nc, tx_bytes
from topo_fixtures import needs_root, root_guard  # noqa: F401  (module fixture)

from mptcplab.topo import Lab, catalogue

pytestmark = [needs_root, pytest.mark.usefixtures("root_guard")]

POLICY = "backup-preference wlan0 wwan0"


@pytest.fixture(scope="module")
def lab():
    with Lab(catalogue.get("wifi-cellular")) as lab:
        yield lab


def test_wifi_carries_the_data_cellular_waits_as_backup(lab, tmp_path):
    data = os.urandom(3_000_000)
    (tmp_path / "data").write_bytes(data)
    client = lab["client"]
    assert client.sysctl("net.mptcp.path_manager") == "kernel"
    before = tx_bytes(client)
    with open(tmp_path / "got", "wb") as sink:
        server = nc(lab, "server", "-l", "-v", "--recv-only", "5401", stdout=sink)
        listening(server)
        with open(tmp_path / "data", "rb") as src:
            proc = nc(lab, "client", "--json", "--policy", POLICY, "10.0.3.1", "5401", stdin=src)
            rc, err = finish(proc)
        assert rc == 0, err
        assert finish(server)[0] == 0
    assert (tmp_path / "got").read_bytes() == data
    records = json_lines(err)
    decisions = [r for r in records if r["type"] == "policy_decision"]
    assert any(r["action"] == "subflow_create" and r["local"] == "10.0.2.1" and r["backup"]
               for r in decisions), decisions
    final = records[-1]
    by_local = {s["local"].rsplit(":", 1)[0]: s for s in final["subflows"]}
    assert set(by_local) == {"10.0.1.1", "10.0.2.1"}
    assert by_local["10.0.2.1"]["backup"] == "local"
    assert by_local["10.0.1.1"]["backup"] == "no"
    assert by_local["10.0.1.1"]["bytes_sent"] >= len(data)
    assert by_local["10.0.2.1"]["bytes_sent"] < 50_000
    # the radios' own counters: WiFi sent the file, cellular next to nothing
    after = tx_bytes(client)
    assert after["wlan0"] - before["wlan0"] > len(data)
    assert after["wwan0"] - before["wwan0"] < 100_000
    # nc put the namespace's path manager back
    assert client.sysctl("net.mptcp.path_manager") == "kernel"


def test_wifi_lost_the_stream_moves_to_cellular(lab, tmp_path):
    first, second = os.urandom(1_000_000), os.urandom(1_000_000)
    client = lab["client"]
    out = tmp_path / "got"
    with open(out, "wb") as sink:
        server = nc(lab, "server", "-l", "-v", "--recv-only", "5402", stdout=sink)
        listening(server)
        r, w = os.pipe()
        proc = nc(lab, "client", "--json", "--policy", POLICY, "10.0.3.1", "5402", stdin=r)
        os.close(r)
        try:
            with open(w, "wb") as feed:
                feed.write(first)
                feed.flush()
                deadline = time.monotonic() + 20
                while out.stat().st_size < len(first) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert out.stat().st_size == len(first)
                client.run(["ip", "link", "set", "wlan0", "down"]).check()
                feed.write(second)
            rc, err = finish(proc, 60)
        finally:
            client.run(["ip", "link", "set", "wlan0", "up"])
        assert rc == 0, err
        assert finish(server)[0] == 0
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(first + second).digest()
    records = json_lines(err)
    assert any(r["type"] == "policy_decision" and r["action"] == "set_backup"
               and "wlan0 went down" in r.get("reason", "") for r in records), \
        [json.dumps(r) for r in records if r["type"].startswith("policy")]
    cell = next(s for s in records[-1]["subflows"] if s["local"].startswith("10.0.2.1:"))
    assert cell["backup"] == "no" and cell["bytes_sent"] >= len(second)
