"""One running node of a lab: run things in it, open sockets, read counters, capture.

Every method works by handing a small job to a thread that setns()es into the node's namespace
(see ns.py): a command or callable started there runs in the namespace, a socket opened there
stays bound to it, /proc/thread-self/net there shows its counters.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mptcplab.errors import LabError, MissingTool
from mptcplab import namespaces as ns
from mptcplab.topo import mib

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from mptcplab.capture import LiveCapture

    from mptcplab.topo.lab import Lab
    from mptcplab.topo.model import Node
    from mptcplab.pm import PathManager

IPPROTO_MPTCP = 262
SOL_MPTCP = 284


@dataclass
class Result:
    """What a command or callable did: exit code, output, and (callables) the return value."""

    args: Any
    returncode: int
    stdout: str | bytes
    stderr: str | bytes
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> Result:
        """Raise LabError (with the end of stderr) unless the exit code is 0."""
        if self.returncode != 0:
            err = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) \
                else self.stderr
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise LabError(f"{_show(self.args)} exited with {self.returncode}"
                           + (f": {tail}" if tail else ""))
        return self


def _show(args: Any) -> str:
    if callable(args):
        return getattr(args, "__qualname__", repr(args))
    if isinstance(args, (list, tuple)):
        return shlex.join(str(a) for a in args)
    return str(args)


def _argv(cmd: str | Sequence[str]) -> list[str]:
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    if not argv:
        raise LabError("empty command")
    return argv


def _drain(fds: dict[int, bytearray], deadline: float | None) -> bool:
    """Read the pipes until all hit EOF; False if the deadline passed first."""
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    try:
        while sel.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = sel.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                return False
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if chunk:
                    fds[key.fd] += chunk
                else:
                    sel.unregister(key.fd)
        return True
    finally:
        sel.close()


def _killpg(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LabHost:
    """A running host or router: `lab["client"]`."""

    def __init__(self, lab: Lab, node: Node, netns: str, fd: int) -> None:
        self.lab = lab
        self.node = node
        self.name = node.name
        self.netns = netns          # e.g. "mptl-k3x9q-client", usable with `ip netns exec`
        self.fd = fd
        self._ipr: IPRoute | None = None
        self._ipr_sock: socket.socket | None = None
        self._pm: PathManager | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._captures: list[LiveCapture] = []
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<LabHost {self.name} netns={self.netns}>"

    # -- addresses from the declaration ----------------------------------------------------

    def addr(self, ifname: str | None = None, family: int = 4) -> str:
        """This node's first IPv4 (or IPv6) address [on `ifname`], without prefix."""
        return self.lab.topology.addr(self.name, ifname, family)

    @property
    def addresses(self) -> list[str]:
        return [str(a.ip) for a in self.lab.topology.addresses(self.name)]

    # -- running things --------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call fn in this process, on a thread inside the namespace; return what it returns.
        Sockets it opens stay in the namespace."""
        return ns.run(self.fd, fn, *args, **kwargs)

    def run(self, cmd: str | Sequence[str] | Callable[..., Any], *args: Any,
            input: str | bytes | None = None, timeout: float | None = 60.0,
            check: bool = False, env: dict[str, str] | None = None, text: bool = True,
            **kwargs: Any) -> Result:
        """Run a command (argv list or a string split like a shell would, no shell) or a Python
        callable (forked, so it may crash or print freely) in the namespace and wait.

        Exit code, stdout and stderr are kept in the Result; a callable's exit code is 0 when it
        returns (an int return becomes the code), 1 when it raises (traceback on stderr), and
        its return value comes back pickled in `Result.value`.
        """
        if callable(cmd):
            res = self._run_callable(cmd, args, kwargs, timeout, text)
        else:
            if args or kwargs:
                raise TypeError("extra arguments are only for callables")
            res = self._run_command(_argv(cmd), input, timeout, env, text)
        return res.check() if check else res

    def _popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        try:
            return ns.run(self.fd, subprocess.Popen, argv, start_new_session=True, **kw)
        except FileNotFoundError:
            raise MissingTool(f"{argv[0]}: command not found (in {self.name})") from None

    def _run_command(self, argv: list[str], input: str | bytes | None, timeout: float | None,
                     env: dict[str, str] | None, text: bool) -> Result:
        with self.lab._step():
            proc = self._popen(argv, stdin=subprocess.PIPE if input is not None else
                               subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
        try:
            data = input.encode() if isinstance(input, str) else input
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.communicate()
            raise LabError(f"{_show(argv)} in {self.name} timed out after {timeout} s") from None
        except BaseException:
            _killpg(proc.pid)
            proc.wait()
            raise
        if text:
            return Result(argv, proc.returncode, out.decode(errors="replace"),
                          err.decode(errors="replace"))
        return Result(argv, proc.returncode, out, err)

    def _run_callable(self, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any], timeout: float | None, text: bool) -> Result:
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, pickled return value

        def fork_here() -> int:
            pid = os.fork()
            if pid == 0:
                _child(fn, args, kwargs, pipes)  # never returns
            return pid

        with self.lab._step():
            pid = ns.run(self.fd, fork_here)
        for _, w in pipes:
            os.close(w)
        bufs = {r: bytearray() for r, _ in pipes}
        try:
            finished = _drain(bufs, None if timeout is None else time.monotonic() + timeout)
            if not finished:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise
        finally:
            for r, _ in pipes:
                os.close(r)
        if not finished:
            raise LabError(f"{_show(fn)} in {self.name} timed out after {timeout} s")
        out, err, val = (bytes(bufs[r]) for r, _ in pipes)
        value = None
        if val:
            with contextlib.suppress(Exception):
                value = pickle.loads(val)
        code = os.waitstatus_to_exitcode(status)
        if text:
            return Result(fn, code, out.decode(errors="replace"), err.decode(errors="replace"),
                          value)
        return Result(fn, code, out, err, value)

    def spawn(self, cmd: str | Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a background process in the namespace (its own process group). The lab stops
        it (SIGTERM, then SIGKILL) at teardown if it is still running."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        with self.lab._step():
            proc = self._popen(_argv(cmd), **popen_kwargs)
            self._procs.append(proc)
        return proc

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A socket bound to this namespace (IPPROTO_MPTCP = 262 for MPTCP). Closed at
        teardown if still open."""
        sock = ns.run(self.fd, socket.socket, family, type, proto)
        self._sockets.add(sock)
        return sock

    # -- state of the namespace ------------------------------------------------------------

    def counters(self) -> mib.Counters:
        """MPTcpExt/TcpExt/IpExt and Tcp/Ip/Udp/Icmp counters, as `nstat` names them."""
        return mib.Counters(ns.run(self.fd, mib.read_here), self.name)

    snapshot = counters

    def sysctl(self, key: str, value: object | None = None) -> str:
        """Read (or write, then read back) a sysctl in this namespace: 'net.mptcp.enabled'."""
        path = sysctl_path(key)

        def body() -> str:
            if value is not None:
                with open(path, "w") as f:
                    f.write(str(value))
            with open(path) as f:
                return f.read().strip()

        try:
            return ns.run(self.fd, body)
        except FileNotFoundError:
            raise LabError(f"{self.name}: no sysctl {key}") from None
        except OSError as exc:
            raise LabError(f"{self.name}: sysctl {key}={value}: {exc.strerror}") from None

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset (`nft -f -` syntax) in this namespace; nft's own error
        message becomes the LabError."""
        if shutil.which("nft") is None:
            raise MissingTool("nft not found: install the Debian package nftables")
        res = self.run(["nft", "-f", "-"], input=ruleset, timeout=30)
        if not res.ok:
            detail = " | ".join(line.strip() for line in res.stderr.strip().splitlines()[:3])
            raise LabError(f"nft in {self.name} rejected the ruleset: {detail}")

    def nft_counters(self) -> dict[str, int]:
        """Packets counted by each rule of the lab's middlebox/loss tables, keyed by rule."""
        import json

        res = self.run(["nft", "-j", "list", "ruleset"], timeout=30).check()
        out: dict[str, int] = {}
        for item in json.loads(res.stdout).get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    key = f"{rule['table']}/{rule['chain']}/{rule.get('handle')}"
                    out[key] = expr["counter"]["packets"]
        return out

    @property
    def ipr(self) -> IPRoute:
        """A pyroute2 IPRoute bound to this namespace (links, addresses, routes, qdiscs)."""
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr_sock = ns.run(self.fd, socket.socket, socket.AF_NETLINK,
                                    socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE
            self._ipr = IPRoute(use_socket=self._ipr_sock, use_event_loop=self.lab._event_loop())
        return self._ipr

    @property
    def pm(self) -> PathManager:
        """This node's path manager (mptcplab.pm.PathManager): endpoints and limits of the
        in-kernel PM, the userspace-PM verbs, events. Closed at teardown."""
        if self._pm is None:
            from mptcplab.pm import PathManager

            self._pm = PathManager(self.fd)
        return self._pm

    def capture(self, iface: str, path: str | os.PathLike[str], filter: str = "",
                snaplen: int = 0, buffer_kib: int | None = None) -> LiveCapture:
        """Capture on `iface` (or "any") to a pcap file with tcpdump; use as a context manager
        or call .stop() (which returns tcpdump's counters; `.packets` is the count). Returns
        once tcpdump is listening. The filter is one tcpdump expression (never options).

        `snaplen` 0 keeps whole packets (up to a 64 KiB GSO segment). tcpdump runs in
        immediate mode, whose ring holds `buffer_kib` / `snaplen` frames: the default buffer
        leaves room for about a thousand."""
        from mptcplab.capture import LiveCapture

        cap = LiveCapture(iface, netns_fd=self.fd, path=path, bpf=filter,
                          snaplen=snaplen or FULL_SNAPLEN, buffer_kib=buffer_kib,
                          where=f"{self.name}:{iface}")
        with self.lab._step():
            cap.start()
            assert cap.proc is not None
            self._captures.append(cap)
        return cap

    # -- teardown --------------------------------------------------------------------------

    def _stop_processes(self) -> None:
        for cap in self._captures:
            with contextlib.suppress(Exception):
                cap.stop()
        self._captures.clear()
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        for p in self._procs:
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._procs.clear()

    def _close(self) -> None:
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        for obj in (self._pm, self._ipr, self._ipr_sock):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        self._pm = self._ipr = self._ipr_sock = None


def sysctl_path(key: str) -> str:
    """'net.ipv4.conf.eth0.forwarding' -> /proc/sys/net/ipv4/conf/eth0/forwarding; a key with
    '/' is taken as a path below /proc/sys (for interface names containing dots)."""
    rel = key if "/" in key else key.replace(".", "/")
    if not rel.startswith("net/") or ".." in rel.split("/"):
        raise LabError(f"sysctl {key!r}: only net.* sysctls live in a network namespace")
    return "/proc/sys/" + rel


def _child(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
           pipes: list[tuple[int, int]]) -> None:
    """In the forked child: point fds 1/2 and sys.stdout/stderr at the pipes, run, exit."""
    code = 1
    try:
        (r_out, w_out), (r_err, w_err), (r_val, w_val) = pipes
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        for fd in (r_out, w_out, r_err, w_err, r_val):
            os.close(fd)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            value = fn(*args, **kwargs)
            code = value if isinstance(value, int) and not isinstance(value, bool) else 0
            with contextlib.suppress(Exception):
                os.write(w_val, pickle.dumps(value))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


FULL_SNAPLEN = 65600    # a whole GSO super-segment with its headers
