"""The engine behind `mptcplab nc`: netcat over MPTCP, with its subflows in view.

    nc(NcOptions(host, port, listen=..., netns=..., subflows=...)) -> exit status

Standard input goes to the connection and the connection to standard output, both at once.
When standard input ends, the write side is shut down (the peer sees EOF) and reading goes on
until the peer shuts down too; the session also ends at the peer's EOF when standard input is a
terminal, or with `recv_only` (stdin unread, nothing sent, no early shutdown: the way to
receive a file; `send_only` discards what arrives). With `subflows`, a table of the connection's subflows (kernel id, local and remote
address, backup, bytes sent/received, RTT, cwnd) goes to stderr about once a second, and a
final one when the session ends; `json` makes those JSON lines. A connection that fell back to
plain TCP is said so on stderr.

Everything comes from the kernel: the socket options of mptcplab.sockopt (MPTCP_FULL_INFO, or
TCP_INFO after a fallback) and the backup flags from sock_diag (mptcplab.sockdiag). With
`policy`, a path-manager policy steers this connection's subflows (mptcplab.nc_policy).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from mptcplab import namespaces as ns
from mptcplab import sockdiag, sockopt
from mptcplab.describe import endpoint
from mptcplab.errors import BadInput, ExitStatus, LabError, MissingTool
from mptcplab.sockopt import IPPROTO_MPTCP, SockAddr, TcpInfo, unmapped

CHUNK = 1 << 18
HIGH_WATER = 1 << 20     # bytes read from stdin and not yet accepted by the socket


@dataclass
class NcOptions:
    host: str | None
    port: int
    listen: bool = False
    netns: str | None = None        # a namespace name under /run/netns, or a path
    source: str | None = None       # -s: local address to bind
    family: int | None = None       # socket.AF_INET / AF_INET6 (-4 / -6)
    tcp: bool = False               # plain TCP instead of MPTCP
    subflows: bool = False
    json: bool = False
    interval: float = 1.0
    timeout: float | None = None    # -w: connect timeout
    verbose: bool = False
    policy: str | None = None       # a path-manager policy for this connection
    recv_only: bool = False         # never read stdin nor shut down early: end at peer's EOF
    send_only: bool = False         # discard what the peer sends


@dataclass
class SubflowRow:
    """One subflow as `--subflows` shows it. `id` is the kernel's subflow id (MPTCP_FULL_INFO;
    1 is the initial subflow); None for the single TCP flow of a fallback or a --tcp session."""

    id: int | None
    local: str
    remote: str
    backup: str                 # "no", "local" (we asked), "remote" (peer asked), "both"
    bytes_sent: int
    bytes_received: int
    rtt_ms: float
    cwnd: int
    state: str                  # TCP state, or "closed" once the kernel no longer lists it


@dataclass
class Sample:
    elapsed: float
    mptcp: bool                 # still MPTCP (False: plain TCP or fell back)
    fallback: bool
    token: int | None
    bytes_sent: int             # connection level (MPTCP data bytes, or the TCP flow's)
    bytes_received: int
    subflows: list[SubflowRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed"] = round(self.elapsed, 3)
        return d


def _backup_word(local: bool, remote: bool) -> str:
    return {(False, False): "no", (True, False): "local", (False, True): "remote",
            (True, True): "both"}[(local, remote)]


def _row(sub_id: int | None, local: SockAddr | None, remote: SockAddr | None,
         t: TcpInfo | None, backup: str) -> SubflowRow:
    return SubflowRow(sub_id, str(local) if local else "-", str(remote) if remote else "-",
                      backup, (t.tcpi_bytes_sent or 0) if t else 0,
                      (t.tcpi_bytes_received or 0) if t else 0,
                      round((t.tcpi_rtt or 0) / 1000, 3) if t else 0.0,
                      (t.tcpi_snd_cwnd or 0) if t else 0, t.state if t else "?")


class SubflowWatch:
    """Samples one connection's subflows; remembers the last values of subflows that have
    gone, so the final table lists every subflow the connection had."""

    def __init__(self, sock: socket.socket, started: float, wanted_mptcp: bool = True) -> None:
        self.sock = sock
        self.started = started
        self.mptcp = sockopt.is_mptcp(sock)
        # An MPTCP listener hands out a plain TCP socket for a client that offered no MPTCP.
        self.wanted_mptcp = wanted_mptcp
        self.seen: dict[int, SubflowRow] = {}
        self.last: Sample | None = None
        self._diag: sockdiag.SockDiag | None = None
        if self.mptcp:
            fd = sockdiag.netns_of(sock)
            try:
                self._diag = sockdiag.SockDiag(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def sample(self) -> Sample:
        elapsed = time.monotonic() - self.started
        if self.mptcp:
            try:
                full = sockopt.full_info(self.sock)
            except sockopt.Fallback:
                pass
            else:
                info = full.mptcp_info
                token = (info.mptcpi_token if info else None) or \
                    (self.last.token if self.last else None)
                live = set()
                for s in full.subflows:
                    # Once the connection has closed the kernel may list a placeholder for
                    # its first subflow: id 0 (real ids start at 1), often with no address.
                    if s.id == 0 or s.local is None or s.local.addr in ("0.0.0.0", "::"):
                        continue
                    d = self._diag.subflow(s.local, s.remote) \
                        if self._diag is not None and s.remote is not None else None
                    # sock_diag lists no closed subflow: keep what it said while it could
                    word = _backup_word(d.backup_local, d.backup_remote) if d is not None \
                        else self.seen[s.id].backup if s.id in self.seen else "no"
                    self.seen[s.id] = _row(s.id, s.local, s.remote, s.tcp_info, word)
                    live.add(s.id)
                for sub_id, row in self.seen.items():
                    if sub_id not in live and row.state != "closed":
                        row.state = "closed"
                self.last = Sample(elapsed, True, False, token,
                                   (info.mptcpi_bytes_sent or 0) if info else 0,
                                   (info.mptcpi_bytes_received or 0) if info else 0,
                                   [self.seen[k] for k in sorted(self.seen)])
                return self.last
        t = sockopt.tcp_info(self.sock)
        local = SockAddr.of(self.sock.family, *self.sock.getsockname()[:2])
        try:
            remote: SockAddr | None = SockAddr.of(self.sock.family,
                                                  *self.sock.getpeername()[:2])
        except OSError:
            remote = self.last.subflows[0].remote if self.last and self.last.subflows else None
        row = _row(None, local, remote, t, "no")
        if t.tcpi_state == 7 and self.last and self.last.subflows and \
                row.bytes_sent + row.bytes_received < \
                self.last.subflows[0].bytes_sent + self.last.subflows[0].bytes_received:
            # a closed fallback connection has dropped its subflow and its counters
            row = SubflowRow(**{**asdict(self.last.subflows[0]), "state": "closed"})
        self.last = Sample(elapsed, False, self.wanted_mptcp, None, row.bytes_sent,
                           row.bytes_received, [row])
        return self.last


# -- the display on stderr -------------------------------------------------------------------

class Display:
    def __init__(self, err: TextIO, json: bool) -> None:
        self.err = err
        self.json = json
        self.tty = err.isatty() and not json
        self._drawn = 0

    def record(self, rec: dict[str, Any]) -> None:
        """A path-manager policy's decision (or warning), as `mptcplab pm daemon` logs it."""
        from mptcplab.report import json_line
        from mptcplab.report.pm import record_line

        if self.json:
            print(json_line({**rec, "type": f"policy_{rec.get('type', 'record')}"}),
                  file=self.err, flush=True)
        else:
            self.note("policy: " + record_line(rec))

    def note(self, text: str) -> None:
        self._forget()
        print(f"mptcplab nc: {text}", file=self.err, flush=True)

    def _forget(self) -> None:
        self._drawn = 0

    def live(self, sample: Sample) -> None:
        from mptcplab.report import json_line, nc_subflow_table

        if self.json:
            print(json_line({"type": "subflows", **sample.as_dict()}), file=self.err, flush=True)
            return
        text = nc_subflow_table(sample)
        if self.tty and self._drawn:
            self.err.write(f"\x1b[{self._drawn}F\x1b[J")
        self.err.write(text + "\n")
        self.err.flush()
        self._drawn = text.count("\n") + 1 if self.tty else 0

    def final(self, sample: Sample) -> None:
        from mptcplab.report import json_line, nc_subflow_table

        if self.json:
            print(json_line({"type": "summary", **sample.as_dict()}), file=self.err, flush=True)
            return
        if self.tty and self._drawn:
            self.err.write(f"\x1b[{self._drawn}F\x1b[J")
        self._drawn = 0
        self.err.write(nc_subflow_table(sample, final=True) + "\n")
        self.err.flush()


# -- opening the connection ------------------------------------------------------------------

def _netns_fd(netns: str | None) -> int | None:
    if netns is None:
        return None
    from mptcplab import privileges

    privileges.require("-n NETNS", privileges.CAP_SYS_ADMIN)
    path = netns if "/" in netns else os.path.join(ns.NETNS_DIR, netns)
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise BadInput(f"no network namespace {netns}") from None


def _socket(family: int, proto: int, netns_fd: int | None) -> socket.socket:
    def make() -> socket.socket:
        return socket.socket(family, socket.SOCK_STREAM, proto)

    try:
        return make() if netns_fd is None else ns.run(netns_fd, make)
    except OSError as exc:
        if proto == IPPROTO_MPTCP and exc.errno == errno.ENOPROTOOPT:
            raise LabError("MPTCP is disabled in this namespace (net.mptcp.enabled = 0); "
                           "enable it or use --tcp") from None
        if proto == IPPROTO_MPTCP and exc.errno in (errno.EPROTONOSUPPORT, errno.EINVAL):
            raise MissingTool("this kernel has no MPTCP (IPPROTO_MPTCP unsupported); "
                              "use --tcp") from None
        raise LabError(f"cannot open a socket: {exc.strerror}") from None


def _family_of(opts: NcOptions) -> int:
    if opts.family is not None:
        return opts.family
    for addr in (opts.host, opts.source):
        if addr and ":" in addr:
            return socket.AF_INET6
    return socket.AF_INET6 if opts.listen and not opts.host else socket.AF_INET


def _resolve(host: str, port: int, family: int | None) -> tuple[int, tuple[Any, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, family or 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadInput(f"cannot resolve {host!r}: {exc.strerror}") from None
    fam, _, _, _, addr = infos[0]
    return fam, addr


def _bind(sock: socket.socket, addr: str, port: int) -> None:
    try:
        sock.bind((addr, port))
    except OSError as exc:
        where = endpoint(addr, port)
        if exc.errno == errno.EADDRINUSE:
            raise LabError(f"cannot bind {where}: address already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"cannot bind {where}: {addr} is not an address here") from None
        if exc.errno == errno.EACCES:
            raise LabError(f"cannot bind {where}: permission denied", ExitStatus.NOT_ROOT) \
                from None
        raise LabError(f"cannot bind {where}: {exc.strerror}") from None


def open_connection(opts: NcOptions, note: Callable[[str], None],
                    on_local_port: Callable[[int], None] | None = None
                    ) -> tuple[socket.socket, socket.socket | None]:
    """Listen and accept one connection, or connect: (the connected socket, the listener).

    The listener stays open while the connection lives: the peer's MP_JOIN SYNs to this
    address and port are answered by it (closed, they would be reset and no second subflow
    could join). Further connections are refused by `pump`. `on_local_port(port)` learns
    the connection's local port before the connection exists (a client binds first)."""
    proto = socket.IPPROTO_TCP if opts.tcp else IPPROTO_MPTCP
    netns_fd = _netns_fd(opts.netns)
    try:
        if opts.listen:
            family = _family_of(opts)
            if opts.host:
                family, addr = _resolve(opts.host, opts.port, opts.family)
                host = addr[0]
            else:
                host = "::" if family == socket.AF_INET6 else "0.0.0.0"
            lsock = _socket(family, proto, netns_fd)
            try:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and not opts.host:
                    lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                _bind(lsock, host, opts.port)
                if on_local_port is not None:
                    on_local_port(opts.port)
                lsock.listen(4)
                if opts.verbose:
                    note(f"listening on {endpoint(host, opts.port)} "
                         f"({'TCP' if opts.tcp else 'MPTCP'})")
                sock, peer = lsock.accept()
            except BaseException:
                lsock.close()
                raise
            if opts.verbose:
                note(f"connection from {endpoint(unmapped(peer[0]), peer[1])}")
            return sock, lsock
        assert opts.host is not None
        family, addr = _resolve(opts.host, opts.port, opts.family or
                                (socket.AF_INET6 if opts.source and ":" in opts.source
                                 else None))
        sock = _socket(family, proto, netns_fd)
        try:
            if opts.source or on_local_port is not None:
                any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
                _bind(sock, opts.source or any_addr, 0)
                if on_local_port is not None:
                    on_local_port(sock.getsockname()[1])
            sock.settimeout(opts.timeout)
            where = endpoint(addr[0], addr[1])
            try:
                sock.connect(addr)
            except TimeoutError:
                raise LabError(f"connection to {where} timed out after {opts.timeout:g} s") \
                    from None
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    raise LabError(f"connection to {where} refused") from None
                raise LabError(f"cannot connect to {where}: {exc.strerror}") from None
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        if opts.verbose:
            note(f"connected to {where} ({'TCP' if opts.tcp else 'MPTCP'})")
        return sock, None
    finally:
        if netns_fd is not None:
            os.close(netns_fd)


# -- moving the bytes ------------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pump(sock: socket.socket, stdin_fd: int | None, stdout_fd: int | None,
         tick: Callable[[], None] | None = None, interval: float = 1.0,
         before_shutdown: Callable[[], None] | None = None,
         at_eof: Callable[[], None] | None = None,
         listener: socket.socket | None = None) -> tuple[int, int]:
    """Move stdin -> sock and sock -> stdout until both directions are done (or the peer is
    done and stdin is a terminal). `tick()` runs about every `interval` s,
    `before_shutdown()` once everything read from stdin is in the socket (before the write
    side is shut down), `at_eof()` when the peer's EOF arrives. `stdin_fd` None: send
    nothing, end at the peer's EOF; `stdout_fd` None: discard what arrives. Connections to
    `listener` (kept open for the joins) are refused with a reset. Returns (bytes sent,
    bytes received)."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    pending = bytearray()
    stdin_open, net_open, shut = stdin_fd is not None, True, False
    sent = received = 0
    # Receiving only, or typing at a terminal: the peer's EOF ends the session.
    ends_at_eof = stdin_fd is None or os.isatty(stdin_fd)
    sel.register(sock, selectors.EVENT_READ)
    if listener is not None:
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ)
    stdin_selectable = False
    if stdin_fd is not None:
        try:
            sel.register(stdin_fd, selectors.EVENT_READ)
            stdin_selectable = True
        except (ValueError, PermissionError, OSError):   # a regular file: always readable
            pass
    next_tick = time.monotonic() + interval
    try:
        while True:
            if not stdin_open and not pending and not shut and stdin_fd is not None:
                if before_shutdown is not None:
                    sock.setblocking(True)
                    before_shutdown()
                    sock.setblocking(False)
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                shut = True
            if shut and not net_open:
                break
            if not net_open and ends_at_eof:
                break
            want = selectors.EVENT_READ if net_open else 0
            if pending:
                want |= selectors.EVENT_WRITE
            _modify(sel, sock, want)
            read_stdin = stdin_open and len(pending) < HIGH_WATER
            if stdin_selectable:
                _modify(sel, stdin_fd, selectors.EVENT_READ if read_stdin else 0)
            timeout = max(0.0, next_tick - time.monotonic()) if tick else None
            if read_stdin and not stdin_selectable:
                timeout = 0.0
            events = sel.select(timeout)
            ready = {key.fd: mask for key, mask in events}
            if listener is not None and listener.fileno() in ready:
                _refuse(listener)
            if read_stdin and stdin_fd is not None and \
                    (not stdin_selectable or stdin_fd in ready):
                data = os.read(stdin_fd, CHUNK)
                if data:
                    pending += data
                else:
                    stdin_open = False
            mask = ready.get(sock.fileno(), 0)
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(CHUNK)
                except BlockingIOError:
                    data = None
                except ConnectionResetError:
                    raise LabError("the connection was reset by the peer") from None
                if data == b"":
                    net_open = False
                    if at_eof is not None:
                        at_eof()
                elif data:
                    received += len(data)
                    if stdout_fd is not None:
                        _write_all(stdout_fd, data)
            if pending and (mask & selectors.EVENT_WRITE or not stdin_selectable):
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    n = 0
                except (BrokenPipeError, ConnectionResetError):
                    raise LabError("the peer closed the connection before taking all the "
                                   f"data ({len(pending)} bytes not sent)") from None
                del pending[:n]
                sent += n
            if tick and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + interval
    finally:
        sel.close()
    return sent, received


def _refuse(listener: socket.socket) -> None:
    """nc takes one connection: reset any other (SO_LINGER 0 turns close() into a RST)."""
    try:
        extra, _ = listener.accept()
    except OSError:
        return
    extra.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    extra.close()


def _modify(sel: selectors.BaseSelector, fileobj: Any, events: int) -> None:
    key = sel.get_map().get(fileobj if isinstance(fileobj, int) else fileobj.fileno())
    if events == 0:
        if key is not None:
            sel.unregister(fileobj)
    elif key is None:
        sel.register(fileobj, events)
    elif key.events != events:
        sel.modify(fileobj, events)


def _settle(sock: socket.socket, limit: float = 10.0) -> None:
    """Wait (up to `limit` s) until the peer has acknowledged everything written: the kernel
    would deliver it after close() anyway, but the final counters should include it."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            try:
                info = sockopt.mptcp_info(sock)
                if info.mptcpi_snd_una == info.mptcpi_write_seq:
                    return
            except (sockopt.Fallback, sockopt.NotMptcp):
                t = sockopt.tcp_info(sock)
                if not t.tcpi_unacked and not t.tcpi_notsent_bytes:
                    return
        except LabError:
            return
        time.sleep(0.02)


def nc(opts: NcOptions, stdin_fd: int = 0, stdout_fd: int = 1,
       err: TextIO | None = None) -> int:
    """Run one netcat session; returns the exit status."""
    from mptcplab.topo.lifecycle import hold_termination, release_termination

    # SIGTERM/SIGHUP unwind like Ctrl-C: a policy's path-manager switch is undone on the way
    hold_termination()
    try:
        return _session(opts, stdin_fd, stdout_fd, err or sys.stderr)
    finally:
        release_termination()


def _session(opts: NcOptions, stdin_fd: int, stdout_fd: int, err: TextIO) -> int:
    display = Display(err, opts.json)
    policy = None
    if opts.policy:
        from mptcplab.nc_policy import OwnPolicy

        policy = OwnPolicy(opts.policy, opts.netns, display.record)
        policy.start()
    try:
        sock, listener = open_connection(opts, display.note,
                                         policy.claim if policy is not None else None)
    except BaseException:
        if policy is not None:
            policy.stop()
        raise
    watch: SubflowWatch | None = None
    try:
        started = time.monotonic()
        watch = SubflowWatch(sock, started, wanted_mptcp=not opts.tcp)
        first = watch.sample()
        if first.fallback:
            display.note("this connection fell back to plain TCP")
        fallback_said = first.fallback

        def tick() -> None:
            nonlocal fallback_said
            sample = watch.sample()             # type: ignore[union-attr]
            if sample.fallback and not fallback_said:
                display.note("this connection fell back to plain TCP")
                fallback_said = True
            if opts.subflows or opts.json:
                display.live(sample)

        showing = opts.subflows or opts.json

        def before_shutdown() -> None:
            # Once both sides have shut down the kernel drops the subflows, and their
            # counters with them: the final table is read while they still exist, with
            # every byte sent acknowledged.
            if showing:
                _settle(sock)
                watch.sample()                  # type: ignore[union-attr]

        pump(sock, None if opts.recv_only else stdin_fd,
             None if opts.send_only else stdout_fd, tick, opts.interval, before_shutdown,
             watch.sample if showing else None, listener)
        final = watch.sample()
        if final.fallback and not fallback_said:
            display.note("this connection fell back to plain TCP")
        if opts.subflows or opts.json:
            display.final(final)
    finally:
        if policy is not None:
            policy.stop()
        if watch is not None:
            watch.close()
        sock.close()
        if listener is not None:
            listener.close()
    return ExitStatus.OK
