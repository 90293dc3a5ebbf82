"""Shared helpers for the topology tests: root/tool skips, a snapshot of the root namespace, and
kernel MPTCP traffic between two lab hosts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

from mptcplab.topo import IPPROTO_MPTCP, Lab, LabHost
from mptcplab.topo.lifecycle import all_states
from mptcplab.topo.naming import NETNS_DIR, PREFIX, lab_namespaces, parse_ns_name

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: builds network namespaces")
needs_nft = pytest.mark.skipif(shutil.which("nft") is None,
                               reason="nft not installed (Debian package nftables)")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None,
                                   reason="tcpdump not installed (Debian package tcpdump)")
needs_ss = pytest.mark.skipif(shutil.which("ss") is None,
                              reason="ss not installed (Debian package iproute2)")

MIB_MPTCP = "MPTcpExt"


# -- the root namespace must come out exactly as it went in -------------------------------

def _sysctls() -> dict[str, str]:
    out = {}
    for d, _, files in os.walk("/proc/sys/net"):
        for f in files:
            path = os.path.join(d, f)
            try:
                with open(path) as fh:
                    out[path] = fh.read()
            except OSError:  # write-only (route/flush) or refusing reads
                pass
    return out


def _netlink_view() -> dict[str, list]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted((ln["index"], ln.get_attr("IFLA_IFNAME"), ln["flags"] & 1,
                        ln.get_attr("IFLA_MTU")) for ln in ipr.get_links())
        addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                       for a in ipr.get_addr())
        routes = sorted(
            (r["family"], r.get_attr("RTA_TABLE"), r.get_attr("RTA_DST") or "", r["dst_len"],
             r.get_attr("RTA_GATEWAY") or "", r.get_attr("RTA_OIF") or 0, r["type"])
            for fam in (socket.AF_INET, socket.AF_INET6)
            for r in ipr.get_routes(family=fam, table=0))  # table 0: all tables
        rules = sorted((r["family"], r.get_attr("FRA_PRIORITY") or 0, r.get_attr("FRA_TABLE"),
                        r.get_attr("FRA_SRC") or "", r["src_len"])
                       for fam in (socket.AF_INET, socket.AF_INET6)
                       for r in ipr.get_rules(family=fam))
    return {"links": links, "addresses": addrs, "routes": routes, "rules": rules}


def _nft_ruleset() -> str:
    if shutil.which("nft") is None:
        return ""
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


@dataclass
class RootState:
    sysctls: dict[str, str] = field(default_factory=_sysctls)
    netlink: dict[str, list] = field(default_factory=_netlink_view)
    nft: str = field(default_factory=_nft_ruleset)

    def differences(self, later: RootState) -> list[str]:
        diffs = []
        for k in sorted(set(self.sysctls) | set(later.sysctls)):
            if self.sysctls.get(k) != later.sysctls.get(k):
                diffs.append(f"sysctl {k}: {self.sysctls.get(k)!r} -> {later.sysctls.get(k)!r}")
        for what, before in self.netlink.items():
            after = later.netlink[what]
            gone, new = set(before) - set(after), set(after) - set(before)
            if gone or new:
                diffs.append(f"root {what}: removed {sorted(gone)}, added {sorted(new)}")
        if self.nft != later.nft:
            diffs.append(f"root nft ruleset changed:\n{self.nft}\n---\n{later.nft}")
        return diffs


def prefixed_root_links() -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX))


def namespaces_of(lab_ids: set[str]) -> list[str]:
    return [n for n in lab_namespaces() if (p := parse_ns_name(n)) and p[0] in lab_ids]


def own_leftovers() -> list[str]:
    """Lab namespaces or state files that belong to this process (other xdist workers' labs
    may legitimately exist at the same time)."""
    mine = {s.id for s in all_states() if s.pid == os.getpid()}
    return namespaces_of(mine) + [f"state {i}" for i in sorted(mine)]


@pytest.fixture(scope="module")
def root_guard():
    """Around a module of root tests: the root namespace is unchanged and nothing of this
    process's labs remains afterwards."""
    if not IS_ROOT:
        yield
        return
    before = RootState()
    yield
    assert own_leftovers() == []
    assert prefixed_root_links() == []
    diffs = before.differences(RootState())
    assert diffs == [], "\n".join(diffs)


# -- kernel MPTCP traffic ------------------------------------------------------------------

@dataclass
class Transfer:
    sent: int
    received: bytes


def mptcp_transfer(server: LabHost, client: LabHost, dst: str, payload: bytes,
                   port: int = 5000, proto: int = IPPROTO_MPTCP,
                   during: callable | None = None, timeout: float = 20.0,
                   source: str | None = None) -> Transfer:
    """Send `payload` from client to server over the kernel's MPTCP (a Python socket with
    IPPROTO_MPTCP in each namespace); the server listens on all addresses, as joins need.
    `during()` runs once the data is on its way, before the client closes."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    listener = server.socket(family, socket.SOCK_STREAM, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen(4)
    listener.settimeout(timeout)
    got: list[bytes] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(timeout)
            chunks = []
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
            got.append(b"".join(chunks))
            conn.close()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    sock = client.socket(family, socket.SOCK_STREAM, proto)
    sock.settimeout(timeout)
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((dst, port))
        sock.sendall(payload)
        if during is not None:
            during()
        sock.shutdown(socket.SHUT_WR)
        th.join(timeout)
    finally:
        sock.close()
        listener.close()
    if errors:
        raise errors[0]
    assert got, "server received no connection"
    return Transfer(len(payload), got[0])


# Python code that takes every capability away from the process that runs it, uid 0 kept:
# "not root" as the lab judges it (capabilities, not uid), while files a root-owned checkout
# holds stay readable wherever it lives (a clone under /root, a mktemp -d). Dropping to
# another uid instead would make the child unable to import a checkout in a private folder.
DROP_CAPS = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
_hdr = _Header(0x20080522, 0)                  # _LINUX_CAPABILITY_VERSION_3
_none = (_Data * 2)()
if _libc.capset(ctypes.byref(_hdr), _none) != 0:
    raise OSError(ctypes.get_errno(), "capset")
"""


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python child process running `code` (the lab built in another process)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_line(proc: subprocess.Popen, word: str, timeout: float = 30.0) -> str:
    """Read the child's stdout until a line starting with `word`."""
    import selectors
    import time

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith(word):
                    return line.strip()
    proc.kill()
    raise AssertionError(f"child never printed {word!r}; stderr: {proc.stderr.read()}")


def leaks_of(pid: int) -> list[str]:
    """Lab namespaces owned by `pid`, or owned by nobody (no state file): what a finished
    process must not leave (other workers' labs have live owners and are ignored)."""
    from mptcplab.topo.lifecycle import LabState

    out = []
    for n in lab_namespaces():
        parsed = parse_ns_name(n)
        state = LabState.load(parsed[0]) if parsed else None
        if state is None or state.pid == pid:
            out.append(n)
    return out


def lab_ids_of_pid(pid: int) -> set[str]:
    return {s.id for s in all_states() if s.pid == pid}


__all__ = [
    "IS_ROOT",
    "NETNS_DIR",
    "Lab",
    "RootState",
    "Transfer",
    "child",
    "lab_ids_of_pid",
    "leaks_of",
    "mptcp_transfer",
    "namespaces_of",
    "needs_nft",
    "DROP_CAPS",
    "needs_root",
    "needs_ss",
    "needs_tcpdump",
    "own_leftovers",
    "prefixed_root_links",
    "root_guard",
    "wait_line",
]
