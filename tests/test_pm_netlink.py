"""The mptcp_pm codec and event decoding, without a kernel: our encoder against pyroute2's
(another implementation of the same nla_map), events decoded from bytes this kernel sent, and
the command line's word parsing."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcplab.errors import BadInput, ExitStatus
from mptcplab.pm import netlink as nl
from mptcplab.pm import parse_token
from mptcplab.pm.events import Announced, Created, Event, ListenerCreated, make_event
from mptcplab.report.pm import event_json, event_line

# Raw attribute bytes of events received from this kernel (Linux 6.18) in a two-paths lab,
# with the lines `ip mptcp monitor` printed for the same events.
CLIENT_CREATED = bytes.fromhex(
    "0800010047d1cb5b0600020002000000080005000a000101080007000a0001020600090083d60000"
    "06000a001388000005000300000000000500040000000000")
SERVER_CREATED = bytes.fromhex(
    "0800010066254ce6050012000100000006000d00020000000600020002000000080005000a000102"
    "080007000a000101060009001388000006000a0083d6000005000300000000000500040000000000")
ANNOUNCED_V6 = bytes.fromhex(
    "0800010047d1cb5b050004000200000006000a001388000014000800deadbeef0002000000000000"
    "00000002")
LISTENER = bytes.fromhex("060002000200000006000900138800000800050000000000")


def test_client_created_as_the_kernel_sent_it():
    ev = make_event(nl.MPTCP_EVENT_CREATED, nl.EVENT_CODEC.decode(CLIENT_CREATED))
    assert isinstance(ev, Created) and ev.KIND == "created"
    assert (ev.token, ev.family, ev.saddr, ev.daddr, ev.sport, ev.dport) == (
        0x5BCBD147, socket.AF_INET, "10.0.1.1", "10.0.1.2", 33750, 5000)
    assert (ev.loc_id, ev.rem_id) == (0, 0)             # CREATED carries the ids as well
    assert ev.server_side is False and not ev.deny_join_id0
    assert event_line(ev) == ("[         CREATED] token=5bcbd147 remid=0 locid=0 "
                              "saddr4=10.0.1.1 daddr4=10.0.1.2 sport=33750 dport=5000")


def test_server_created_has_flags_and_the_old_server_side_attribute():
    ev = make_event(nl.MPTCP_EVENT_CREATED, nl.EVENT_CODEC.decode(SERVER_CREATED))
    assert ev.server_side is True and ev.flags == nl.MPTCP_PM_EV_FLAG_SERVER_SIDE
    assert ev.server_side_attr == 1
    assert event_line(ev).endswith("sport=5000 dport=33750 flags=2")
    js = event_json(ev)
    assert js["flags"] == ["server_side"] and js["server_side"] is True
    assert js["token"] == 0xE64C2566 and js["family"] == "inet"


def test_announced_has_no_family_and_a_network_order_port():
    ev = make_event(nl.MPTCP_EVENT_ANNOUNCED, nl.EVENT_CODEC.decode(ANNOUNCED_V6))
    assert isinstance(ev, Announced)
    assert (ev.family, ev.addr_family, ev.daddr, ev.dport, ev.rem_id) == (
        None, socket.AF_INET6, "dead:beef:2::2", 5000, 2)
    assert event_line(ev) == ("[       ANNOUNCED] token=5bcbd147 remid=2 "
                              "daddr6=dead:beef:2::2 dport=5000")


def test_listener_event_and_unknown_ones():
    ev = make_event(nl.MPTCP_EVENT_LISTENER_CREATED, nl.EVENT_CODEC.decode(LISTENER))
    assert isinstance(ev, ListenerCreated) and ev.token is None
    assert event_line(ev) == "[LISTENER_CREATED] saddr4=0.0.0.0 sport=5000"
    # an event type and an attribute this code does not know survive, marked
    raw = LISTENER + bytes.fromhex("0800630001020304")
    ev = make_event(99, nl.EVENT_CODEC.decode(raw))
    assert type(ev) is Event and event_line(ev) == "[UNKNOWN 99]"
    assert event_json(ev)["unknown_attrs"] == {"ATTR_99": "01020304"}


def test_every_attribute_prints_as_iproute2_prints_it():
    """iproute2's format strings for the attributes this kernel sends only on rare paths
    (ip/ipmptcp.c): error %u, flags %x, timeout %u, ifindex %d, reset_reason %u,
    reset_flags 0x%x."""
    m = nl.mptcp_event_msg()
    m["cmd"], m["version"] = nl.MPTCP_EVENT_SUB_CLOSED, 1
    m["attrs"] = [("MPTCP_ATTR_TOKEN", 0xA), ("MPTCP_ATTR_FAMILY", 10),
                  ("MPTCP_ATTR_LOC_ID", 2), ("MPTCP_ATTR_REM_ID", 3),
                  ("MPTCP_ATTR_SADDR6", "dead:beef:2::1"), ("MPTCP_ATTR_DADDR6", "dead:beef::2"),
                  ("MPTCP_ATTR_SPORT", 40000), ("MPTCP_ATTR_DPORT", 443),
                  ("MPTCP_ATTR_BACKUP", 1), ("MPTCP_ATTR_ERROR", 104), ("MPTCP_ATTR_FLAGS", 3),
                  ("MPTCP_ATTR_TIMEOUT", 7), ("MPTCP_ATTR_IF_IDX", 101),
                  ("MPTCP_ATTR_RESET_REASON", 3), ("MPTCP_ATTR_RESET_FLAGS", 1)]
    m.encode()
    ev = make_event(nl.MPTCP_EVENT_SUB_CLOSED, nl.EVENT_CODEC.decode(bytes(m.data), 20))
    assert event_line(ev) == (
        "[       SF_CLOSED] token=0000000a remid=3 locid=2 saddr6=dead:beef:2::1 "
        "daddr6=dead:beef::2 sport=40000 dport=443 backup=1 error=104 flags=3 timeout=7 "
        "ifindex=101 reset_reason=3 reset_flags=0x1")
    js = event_json(ev)
    assert js["flags"] == ["deny_join_id0", "server_side"] and js["family"] == "inet6"
    assert (js["reset_reason"], js["reset_flags"], js["if_idx"]) == (3, 1, 101)
    assert ev.deny_join_id0 and ev.server_side


def test_a_truncated_attribute_does_not_raise():
    attrs = nl.EVENT_CODEC.decode(CLIENT_CREATED[:-3])
    assert attrs["MPTCP_ATTR_TOKEN"] == 0x5BCBD147


addr_st = st.one_of(
    st.builds(lambda ip: ("MPTCP_PM_ADDR_ATTR_ADDR4", str(ip)), st.ip_addresses(v=4)),
    st.builds(lambda ip: ("MPTCP_PM_ADDR_ATTR_ADDR6", str(ip)), st.ip_addresses(v=6)))


def unnested(data: bytes) -> bytes:
    """The attributes with NLA_F_NESTED cleared (recursively in the address nests)."""
    out, off = bytearray(), 0
    while off + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, off)
        body = data[off + 4:off + length]
        if atype & nl.NLA_F_NESTED:
            body = unnested(body)
        out += struct.pack("=HH", length, atype & ~nl.NLA_F_NESTED) + body
        out += data[off + length:off + ((length + 3) & ~3)]
        off += (length + 3) & ~3
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(addr=addr_st, port=st.integers(0, 65535), flags=st.integers(0, 63),
       id_=st.integers(0, 255), ifindex=st.integers(-2**31, 2**31 - 1),
       token=st.integers(0, 2**32 - 1), remote=st.booleans())
def test_our_encoder_writes_what_pyroute2_writes(addr, port, flags, id_, ifindex, token,
                                                 remote):
    """The same nla_map encoded by pyroute2 (the topology builder's batches) and by the
    codec (the client): the same bytes, NLA_F_NESTED on the address nests included (Linux
    6.1 refuses a nest without it), and both decoders read them back the same."""
    nest = {"attrs": [("MPTCP_PM_ADDR_ATTR_FAMILY", 2 if addr[0].endswith("4") else 10), addr,
                      ("MPTCP_PM_ADDR_ATTR_ID", id_), ("MPTCP_PM_ADDR_ATTR_PORT", port),
                      ("MPTCP_PM_ADDR_ATTR_FLAGS", flags),
                      ("MPTCP_PM_ADDR_ATTR_IF_IDX", ifindex)]}
    attrs = [("MPTCP_PM_ATTR_TOKEN", token), ("MPTCP_PM_ATTR_ADDR", nest)]
    if remote:
        attrs.append(("MPTCP_PM_ATTR_ADDR_REMOTE", {"attrs": nest["attrs"][:2]}))
    m = nl.mptcp_pm_msg()
    m["cmd"], m["version"], m["attrs"] = nl.MPTCP_PM_CMD_SUBFLOW_CREATE, 1, attrs
    m.encode()
    theirs = bytes(m.data)[20:]
    ours = nl.PM_CODEC.encode(attrs)
    assert ours == theirs
    assert unnested(ours) != ours                # the nests are marked
    back = nl.PM_CODEC.decode(ours)
    assert back["MPTCP_PM_ATTR_TOKEN"] == token
    assert {k: ip_address(v) if k.endswith(("ADDR4", "ADDR6")) else v
            for k, v in back["MPTCP_PM_ATTR_ADDR"].items()} == \
        {k: ip_address(v) if k.endswith(("ADDR4", "ADDR6")) else v for k, v in nest["attrs"]}
    decoded = nl.mptcp_pm_msg(bytes(m.data))
    decoded.decode()
    a = decoded.get_attr("MPTCP_PM_ATTR_ADDR")
    assert ip_address(a.get_attr(addr[0])) == ip_address(addr[1]) and a.get_attr("MPTCP_PM_ADDR_ATTR_PORT") == port


@settings(max_examples=200, deadline=None)
@given(sport=st.integers(0, 65535), token=st.integers(0, 2**32 - 1),
       saddr=st.ip_addresses(v=6), backup=st.integers(0, 1))
def test_event_decoder_agrees_with_pyroute2(sport, token, saddr, backup):
    m = nl.mptcp_event_msg()
    m["cmd"], m["version"] = nl.MPTCP_EVENT_SUB_ESTABLISHED, 1
    m["attrs"] = [("MPTCP_ATTR_TOKEN", token), ("MPTCP_ATTR_SADDR6", str(saddr)),
                  ("MPTCP_ATTR_SPORT", sport), ("MPTCP_ATTR_BACKUP", backup)]
    m.encode()
    data = bytes(m.data)
    assert data[20:22 + 2][2:] == b"\x01\x00"              # the token's attribute type, 1
    mine = nl.EVENT_CODEC.decode(data, 20)
    theirs = nl.mptcp_event_msg(data)
    theirs.decode()
    assert mine == {k: v for k, v in theirs["attrs"]}
    assert ip_address(mine["MPTCP_ATTR_SADDR6"]) == saddr
    # the port goes network order: attribute 9 (SPORT), 6 bytes long, big-endian value
    assert struct.pack("=HH", 6, 9) + sport.to_bytes(2, "big") in data


def test_flags_and_tokens_read_as_people_write_them():
    assert nl.flags_value("signal,backup") == 5 == nl.flags_value(["signal", "backup"])
    assert nl.flags_names(0x23) == ["signal", "subflow", "laminar"]
    with pytest.raises(ValueError, match="unknown MPTCP endpoint flag 'sgnal'"):
        nl.flags_value("sgnal")
    assert parse_token("5bcbd147") == parse_token("0x5BCBD147") == 0x5BCBD147
    for bad in ("zz", "123456789", ""):
        with pytest.raises(BadInput):
            parse_token(bad)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", "pm", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("args, status, words", [
    (["endpoint", "add"], ExitStatus.USAGE, "give one ADDRESS"),
    (["endpoint", "add", "10.0.0.1", "sbflow"], ExitStatus.USAGE, "unknown word 'sbflow'"),
    (["endpoint", "add", "10.0.0.1", "port", "80", "subflow"], ExitStatus.BAD_INPUT,
     "a port needs the signal flag"),
    (["endpoint", "add", "10.0.0.1", "id", "x"], ExitStatus.USAGE, "id must be a whole number"),
    (["endpoint", "change", "1"], ExitStatus.USAGE, "say what changes"),
    (["limits", "set"], ExitStatus.USAGE, "give subflows N"),
    (["announce", "10.0.0.1", "id", "3"], ExitStatus.USAGE, "add `token T`"),
    (["announce", "10.0.0.1", "token", "xyz", "id", "3"], ExitStatus.BAD_INPUT,
     "not hexadecimal"),
    (["subflow", "create", "10.0.0.1", "10.0.0.2", "token", "1"], ExitStatus.USAGE,
     "needs a port"),
    (["subflow", "frob"], ExitStatus.USAGE, "create, destroy or show"),
    (["set-flags", "10.0.0.1", "10.0.0.2", "token", "1"], ExitStatus.USAGE,
     "backup or nobackup"),
    (["daemon"], ExitStatus.USAGE, "which policy"),
    (["daemon", "--policy", "subflows", "two"], ExitStatus.USAGE,
     "N must be a whole number, got 'two'"),
    (["daemon", "--policy", "subflows", "2", "3"], ExitStatus.USAGE, "takes [N]"),
    (["daemon", "--policy", "mesh"], ExitStatus.USAGE, "no policy 'mesh'"),
    (["daemon", "--policy", "/nonexistent/p.py"], ExitStatus.BAD_INPUT, "not found"),
    (["daemon", "--policy", "backup-preference", "wlan0"], ExitStatus.USAGE,
     "takes PRIMARY BACKUP"),
    (["daemon", "--policy", "fullmesh"], ExitStatus.USAGE,      # here: the host's own PM
     "name a lab node with -n LAB:NODE, or say --host"),
])
def test_command_line_mistakes_are_one_line_errors(args, status, words, capsys):
    """Caught before anything is asked of the kernel (no root needed)."""
    from mptcplab.cli import main

    assert main(["pm", *args]) == status
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("mptcplab: error: ") and words in err, err


def test_the_installed_command_says_the_same():
    res = cli("daemon", "--policy", "subflows", "two")
    assert res.returncode == ExitStatus.USAGE and res.stdout == ""
    assert res.stderr == ("mptcplab: error: policy subflows: N must be a whole number, "
                          "got 'two'\n")
