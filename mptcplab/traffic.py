"""Kernel MPTCP traffic between two nodes of a lab: open a connection, move bytes both ways,
see what each application read. Used by the conformance cases, the demos and `mptcplab nc`.

    connect(client, server, dst) -> Connection    an open kernel connection (context manager)
    Connection.stream(block) -> Stream             a bulk upload until stop()
    transfer(client, server, dst, upload=, download=) -> Transfer   one whole connection
    pattern(n), first_difference(sent, read)       data that shows loss or duplication

`client` and `server` are lab nodes (`lab["client"]`): their sockets live in their namespaces.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mptcplab.errors import LabError
from mptcplab.sockopt import IPPROTO_MPTCP, is_fallback

if TYPE_CHECKING:
    from mptcplab.topo import LabHost


class TrafficError(LabError, AssertionError):
    """Data did not arrive as expected (in a case, a failure like any assertion)."""


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read `n` bytes (fewer only at EOF)."""
    chunks, got = [], 0
    while got < n:
        data = sock.recv(min(1 << 20, n - got))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    """Read until EOF."""
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


@dataclass
class Connection:
    """An open kernel connection: `client` and `server` (the accepted socket) in their
    namespaces. `upload`/`download` move bytes and return what the other side read."""

    client: socket.socket
    server: socket.socket
    listener: socket.socket
    timeout: float

    def _move(self, src: socket.socket, dst: socket.socket, data: bytes) -> bytes:
        out: list[bytes] = []
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                out.append(recv_exactly(dst, len(data)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        src.sendall(data)
        th.join(self.timeout)
        if errors:
            raise errors[0]
        if th.is_alive() or not out:
            raise TrafficError(f"{len(data)} bytes sent, not all read within {self.timeout:g} s")
        return out[0]

    def upload(self, data: bytes) -> bytes:
        """Client sends `data`; returns what the server read (len(data) bytes, or less at EOF)."""
        return self._move(self.client, self.server, data)

    def download(self, data: bytes) -> bytes:
        return self._move(self.server, self.client, data)

    def upload_until_eof(self, data: bytes, *, timeout: float = 5.0,
                         limit: int | None = None) -> bytes:
        """Client sends `data` then shuts down; the server reads until EOF, `limit` bytes
        (default 4 x len(data)) or `timeout` s, whichever first. Returns what the server's
        application read, never fails: for cases that judge what arrived."""
        limit = 4 * len(data) if limit is None else limit

        def send() -> None:
            with suppress(OSError):
                self.client.sendall(data)
                self.client.shutdown(socket.SHUT_WR)

        threading.Thread(target=send, daemon=True).start()
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < limit and (left := deadline - time.monotonic()) > 0:
            self.server.settimeout(min(left, 0.5))
            try:
                chunk = self.server.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        self.server.settimeout(self.timeout)
        return bytes(got)

    def stream(self, block: bytes) -> Stream:
        """The client sends `block` over and over, the server reads, until `stop()`: a bulk
        upload for as long as a scenario needs (use it as a context manager)."""
        return Stream(self.client, self.server, block)

    @property
    def fallback(self) -> tuple[bool, bool]:
        """(client fell back to TCP, server fell back to TCP)."""
        return is_fallback(self.client), is_fallback(self.server)

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            with suppress(OSError):
                s.close()


class Stream:
    """A running bulk transfer from socket `src` to socket `dst` (a Connection's client and
    server, or any connected pair): `progress` holds (time.time(), bytes `dst` has read so
    far) after each read, `read` the total. `stop()` ends the writer, shuts `src`'s sending
    side and waits for `dst` to read to the end; leaving the `with` normally does too."""

    def __init__(self, src: socket.socket, dst: socket.socket, block: bytes) -> None:
        self.src, self.dst, self.block = src, dst, block
        self.progress: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()

    @property
    def read(self) -> int:
        return self.progress[-1][1] if self.progress else 0

    def _read(self) -> None:
        total = 0
        with suppress(OSError):                 # closed under it on Ctrl-C
            while data := self.dst.recv(1 << 20):
                total += len(data)
                self.progress.append((time.time(), total))

    def _write(self) -> None:
        while not self._stop.is_set():
            try:
                self.src.send(self.block)
            except OSError:
                return

    def stop(self, timeout: float = 15.0) -> int:
        """Stop sending; wait up to `timeout` s for the server to read what is in flight.
        Returns the bytes the server read."""
        if not self._stop.is_set():
            self._stop.set()
            self._writer.join(5)
            with suppress(OSError):
                self.src.shutdown(socket.SHUT_WR)
        self._reader.join(timeout)
        return self.read

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.stop()
        else:                   # Ctrl-C or an error: no waiting; closing the sockets ends both
            self._stop.set()


@contextmanager
def connect(client: LabHost, server: LabHost, dst: str, *, port: int = 5000,
            proto: int = IPPROTO_MPTCP, source: str | None = None,
            timeout: float = 10.0) -> Iterator[Connection]:
    """Open one kernel connection from `client` to `dst` (a `server` address); the server
    listens on every address (joins arrive on the others). Closed on exit."""
    family = _family(dst)
    listener = server.socket(family, socket.SOCK_STREAM, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen(4)
    listener.settimeout(timeout)
    sock = client.socket(family, socket.SOCK_STREAM, proto)
    sock.settimeout(timeout)
    conn = None
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((dst, port))
        accepted, _ = listener.accept()
        accepted.settimeout(timeout)
        conn = Connection(sock, accepted, listener, timeout)
        yield conn
    finally:
        if conn is not None:
            conn.close()
        else:
            sock.close()
            listener.close()


@dataclass
class Transfer:
    """What one kernel connection moved: bytes each side's application read, and whether
    each side was still MPTCP (not fallen back) once the data had arrived."""

    upload: bytes
    download: bytes
    server_read: bytes
    client_read: bytes
    client_fallback: bool
    server_fallback: bool

    @property
    def intact(self) -> bool:
        return self.server_read == self.upload and self.client_read == self.download


def transfer(client: LabHost, server: LabHost, dst: str, *, upload: bytes = b"",
             download: bytes = b"", port: int = 5000, proto: int = IPPROTO_MPTCP,
             source: str | None = None, during: Callable[[Connection], None] | None = None,
             timeout: float = 10.0) -> Transfer:
    """One kernel connection: the client sends `upload`, the server `download` (both at once),
    `during(conn)` runs once the data is on its way, then both shut down and read to EOF."""
    with connect(client, server, dst, port=port, proto=proto, source=source,
                 timeout=timeout) as conn:
        results: dict[str, bytes] = {}
        errors: list[BaseException] = []

        def side(name: str, sock: socket.socket, data: bytes) -> None:
            try:
                reader = threading.Thread(target=lambda: results.__setitem__(name, recv_all(sock)),
                                          daemon=True)
                reader.start()
                sock.sendall(data)
                if name == "client_read" and during is not None:
                    during(conn)
                sock.shutdown(socket.SHUT_WR)
                reader.join(timeout)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=side, args=a, daemon=True) for a in
                   (("client_read", conn.client, upload), ("server_read", conn.server, download))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout * 2)
        if errors:
            raise errors[0]
        missing = [k for k in ("client_read", "server_read") if k not in results]
        if missing:
            raise TrafficError(f"transfer did not finish within {timeout:g} s: "
                                 f"{', '.join(missing)} still waiting for EOF")
        fb_client, fb_server = conn.fallback
    return Transfer(upload, download, results["server_read"], results["client_read"],
                    fb_client, fb_server)


def pattern(n: int, seed: int = 0) -> bytes:
    """`n` bytes that differ at every position modulo 251: a shifted, lost or duplicated
    byte shows in a comparison. Never 0xFB-0xFF: a middlebox writing 0xFF is seen."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def mismatch_at(left: Any, right: Any) -> int:
    """Index of the first element where two sequences (bytes, text) differ, the shorter one's
    length if one is a prefix of the other; found by halving, fast on megabytes."""
    lo, hi = 0, min(len(left), len(right))
    while lo < hi:                       # invariant: left[:lo] == right[:lo]
        mid = (lo + hi + 1) // 2
        if left[lo:mid] == right[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def first_difference(sent: bytes, got: bytes) -> str:
    """"identical" or where and how two byte strings part."""
    if sent == got:
        return "identical"
    i = mismatch_at(sent, got)
    if i < min(len(sent), len(got)):
        return (f"{len(sent)} bytes sent, {len(got)} read; first difference at byte {i} "
                f"(sent {sent[i]:#04x}, read {got[i]:#04x})")
    return f"{len(sent)} bytes sent, {len(got)} read; the shorter is a prefix of the longer"
