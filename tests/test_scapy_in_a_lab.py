"""docs/peer.md's workflow: Scapy's sr1() inside a lab node, with the kernel's RSTs for the
flow dropped (kernel_rsts_dropped), and the third ACK that makes the kernel's MPTCP socket."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, TCP
from scapy.sendrecv import send, sr1
from topo_fixtures import needs_nft, needs_root, needs_tcpdump

from mptcplab.decode import decode_file
from mptcplab.errors import BadInput
from mptcplab.layers import MPCapable, mptcp_options
from mptcplab.peer import kernel_rsts_dropped
from mptcplab.topo import IPPROTO_MPTCP, Lab, catalogue

pytestmark = [needs_root, needs_nft, needs_tcpdump]


@pytest.fixture(autouse=True)
def raw_l3_sockets():
    """Scapy's own routing table is the host's: in a node, let the kernel route."""
    from scapy.config import conf
    from scapy.supersocket import L3RawSocket

    old = conf.L3socket
    conf.L3socket = L3RawSocket
    yield
    conf.L3socket = old


def test_sr1_in_a_node_gets_the_kernels_mp_capable_syn_ack_and_no_rst(tmp_path):
    with Lab(catalogue.get("two-paths")) as lab:
        client, server = lab["client"], lab["server"]
        listener = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        listener.bind(("0.0.0.0", 5000))
        listener.listen(1)
        cap = client.capture("eth0", tmp_path / "c.pcap", filter="tcp port 5000")
        key = 0x0123456789ABCDEF
        syn = IP(src="10.0.1.1", dst="10.0.1.2") / TCP(
            sport=40001, dport=5000, flags="S", seq=1000,
            options=[("MPTCP", MPCapable(flags="H"))])
        with kernel_rsts_dropped(client, 40001):
            synack = client.call(sr1, syn, iface="eth0", timeout=3, verbose=False)
            assert synack is not None and synack[TCP].flags == "SA"
            (mpc,) = mptcp_options(synack[TCP])
            assert mpc.stage == "SYN-ACK" and mpc.version == 1
            # the third ACK echoes both keys: the kernel's listener then has a socket
            ack = IP(src="10.0.1.1", dst="10.0.1.2") / TCP(
                sport=40001, dport=5000, flags="A", seq=1001, ack=synack[TCP].seq + 1,
                options=[("MPTCP", MPCapable(flags="H", sender_key=key,
                                             receiver_key=mpc.sender_key))])
            client.call(send, ack, iface="eth0", verbose=False)
            listener.settimeout(3)
            accepted, peer = listener.accept()
            assert peer == ("10.0.1.1", 40001)
            accepted.close()
        cap.stop()
    sent_by_client = [s for s in decode_file(str(tmp_path / "c.pcap"), mptcp_only=False)
                      if s.src == "10.0.1.1"]
    assert [s.tcp_flags for s in sent_by_client][:2] == ["S", "A"]
    assert not any("R" in s.tcp_flags for s in sent_by_client[:2])


def test_without_the_rule_the_kernel_resets_the_flow(tmp_path):
    """Why the rule exists: the SYN-ACK reaches a kernel with no socket for port 40002."""
    with Lab(catalogue.get("two-paths")) as lab:
        client, server = lab["client"], lab["server"]
        listener = server.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        listener.bind(("0.0.0.0", 5000))
        listener.listen(1)
        cap = client.capture("eth0", tmp_path / "c.pcap", filter="tcp port 5000")
        syn = IP(src="10.0.1.1", dst="10.0.1.2") / TCP(sport=40002, dport=5000, flags="S")
        assert client.call(sr1, syn, iface="eth0", timeout=3, verbose=False) is not None
        cap.settle()
        cap.stop()
    flags = [s.tcp_flags for s in decode_file(str(tmp_path / "c.pcap"), mptcp_only=False)
             if s.src == "10.0.1.1"]
    assert flags[0] == "S" and "R" in flags[1]


def test_bad_ports_are_refused():
    with pytest.raises(BadInput, match="ports must be whole numbers"):
        with kernel_rsts_dropped(object(), 70000):
            pass
