"""The path-manager daemon: a userspace path manager that runs one Policy in a namespace.

Start-up order matters: subscribe to the events first (from then on nothing is missed, and the
kernel sees a userspace PM listening), switch the namespace's path manager to `userspace`
(remembering the old value), watch links and addresses, then learn the connections already
open from sock_diag, and only then hand events to the policy. On stop (SIGTERM, Ctrl-C) the
policy's on_stop runs, the old path manager is put back and every socket is closed.

When the kernel could not queue an event (the subscription's buffer overflowed: ENOBUFS) the
daemon says so, reads the dumps again and reconciles: connections it never heard of are
handed to the policy as learned ones, connections gone are closed.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from mptcplab.errors import LabError, MissingTool
from mptcplab import sockdiag
from mptcplab.pm import netlink as nl
from mptcplab.pm.client import DEFAULT_EVENT_RCVBUF, PathManager, PmError, in_netns
from mptcplab.pm.events import Event
from mptcplab.pm.links import LinkWatch
from mptcplab.pm.policy import Connection, Outcome, Policy, Subflow, family_of, unmap

PM_SYSCTLS = ("/proc/sys/net/mptcp/path_manager", "/proc/sys/net/mptcp/pm_type")
USERSPACE = {"path_manager": "userspace", "pm_type": "1"}
Record = dict[str, Any]
MAX_BATCHES = 4096          # datagrams read in one go before timers and links get a turn


def _read_write_sysctl(path: str, value: str | None) -> str:
    with open(path) as f:
        old = f.read().strip()
    if value is not None and value != old:
        with open(path, "w") as f:
            f.write(value)
    return old


class Daemon:
    """Run `policy` in the namespace `netns` (a name, a path, an fd, or None for here).

    `on_record(record)` receives every log record (a dict: decisions with their reason,
    events when `verbose`, start/stop/resync notes), `on_idle()` is called when the loop
    has handled everything queued (where an output stream is worth flushing); `rcvbuf` is the
    event subscription's kernel buffer in bytes.
    """

    def __init__(self, policy: Policy, netns: str | int | None = None, *,
                 on_record: Callable[[Record], None] | None = None,
                 on_idle: Callable[[], None] | None = None,
                 rcvbuf: int = DEFAULT_EVENT_RCVBUF, verbose: bool = False,
                 switch: bool = True) -> None:
        self.policy = policy
        policy.daemon = self
        self.netns = netns
        self.on_record = on_record or (lambda rec: None)
        self.on_idle = on_idle or (lambda: None)
        self.rcvbuf = rcvbuf
        self.verbose = verbose
        self.switch = switch
        self.connections: dict[int, Connection] = {}
        self.stats = {"events": 0, "decisions": 0, "errors": 0, "enobufs": 0, "resyncs": 0,
                      "learned": 0}
        self.pm: PathManager | None = None
        self.links: LinkWatch = None  # type: ignore[assignment]
        self._sysctl: tuple[str, str] | None = None
        self._timers: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._tick = itertools.count()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._started = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.pm = PathManager(self.netns)
        try:
            self.pm.require(nl.MPTCP_PM_CMD_SUBFLOW_CREATE)
            self.pm.subscribe(self.rcvbuf)
            if self.switch:
                self._switch_to_userspace()
            sub, dump = in_netns(self.pm._fd, LinkWatch.open_here)
            self.links = LinkWatch(sub, dump)
            self._started = True
            self.record("start", f"policy {self.policy.name}: {self.policy.describe()}",
                        kind="info", netns=self.netns if isinstance(self.netns, str) else None,
                        path_manager="userspace" if self.switch else "unchanged")
            self.resync(initial=True)
            self.policy.on_start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Undo everything start() did (safe to call twice, or after a failed start)."""
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):
                self.policy.on_stop()
            self.record("stop", "stopping", kind="info", **self.stats)
            self.on_idle()
        if self._sysctl is not None and self.pm is not None:
            path, old = self._sysctl
            self._sysctl = None
            try:
                in_netns(self.pm._fd, _read_write_sysctl, path, old)
            except OSError as exc:
                self.record("warning", f"could not put {path} back to {old}: {exc.strerror}",
                            kind="warning")
        if self.links is not None:
            self.links.close()
            self.links = None  # type: ignore[assignment]
        if self.pm is not None:
            self.pm.close()
            self.pm = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def request_stop(self) -> None:
        """Ask the loop to return (safe from a signal handler or another thread)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self, duration: float | None = None, install_signals: bool = False) -> None:
        """start(), then serve events until request_stop() (or SIGTERM/SIGINT/SIGHUP with
        `install_signals`, or `duration` seconds), then stop()."""
        old: dict[int, Any] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                old[sig] = signal.signal(sig, lambda *_: self.request_stop())
        try:
            self.start()
            self.serve(duration)
        finally:
            try:
                self.stop()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    def serve(self, duration: float | None = None) -> None:
        assert self.pm is not None
        end = None if duration is None else time.monotonic() + duration
        sel = selectors.DefaultSelector()
        ev_fd = self.pm.event_fileno()
        sel.register(ev_fd, selectors.EVENT_READ, "events")
        sel.register(self.links.fileno(), selectors.EVENT_READ, "links")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                self.on_idle()                  # before waiting: what was logged goes out
                now = time.monotonic()
                wait = None
                if self._timers:
                    wait = max(0.0, self._timers[0][0] - now)
                if end is not None:
                    if now >= end:
                        return
                    wait = end - now if wait is None else min(wait, end - now)
                for key, _ in sel.select(wait):
                    if key.data == "events":
                        self._read_events()
                    elif key.data == "links":
                        self._read_links()
                    else:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                self._run_timers()
        finally:
            sel.close()

    def after(self, seconds: float, fn: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, next(self._tick), fn, args))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(self._timers)
            self._call(fn, *args)

    def _switch_to_userspace(self) -> None:
        assert self.pm is not None
        for path in PM_SYSCTLS:
            if not os.path.exists(path):
                continue
            want = USERSPACE[os.path.basename(path)]
            try:
                old = in_netns(self.pm._fd, _read_write_sysctl, path, want)
            except OSError as exc:
                raise LabError(f"switching {path} to {want}: {exc.strerror}") from None
            if old != want:
                self._sysctl = (path, old)
            return
        raise MissingTool("this kernel has no net.mptcp.path_manager nor pm_type sysctl: no "
                          "userspace path manager")

    # -- logging ---------------------------------------------------------------------------

    def record(self, action: str, reason: str, conn: Connection | None = None,
               policy: Policy | None = None, kind: str = "decision", **fields: Any) -> Record:
        rec: Record = {"type": kind, "time": round(time.time(), 6), "action": action}
        if conn is not None:
            rec["token"] = conn.token
        rec.update({k: v for k, v in fields.items() if v is not None})
        if reason:
            rec["reason"] = reason
        if policy is not None or kind == "decision":
            rec["policy"] = (policy or self.policy).name
        if kind == "decision":
            self.stats["decisions"] += 1
        self.on_record(rec)
        return rec

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a policy hook; a bug in the policy is logged, it does not stop the daemon."""
        try:
            fn(*args)
        except (KeyboardInterrupt, SystemExit):
            raise
        except PmError as exc:
            self.stats["errors"] += 1
            self.record("error", str(exc), kind="warning")
        except Exception as exc:
            self.stats["errors"] += 1
            self.record("error", f"{getattr(fn, '__qualname__', fn)} raised "
                        f"{type(exc).__name__}: {exc}", kind="warning")

    # -- events ----------------------------------------------------------------------------

    def _read_events(self) -> None:
        """Everything queued now. After an overflow the queue is read empty first (until it
        is, the kernel reports no further drop), then the dumps are read: whatever was lost
        before that point is in them."""
        assert self.pm is not None
        overflow = False
        block = True
        for n in itertools.count():
            if n >= MAX_BATCHES and not overflow:
                break                     # timers and links get a turn; the rest comes next
            try:
                events = self.pm.read_events(block=block)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overflow = True
                self.stats["enobufs"] += 1
                continue
            block = False
            for ev in events:
                self.stats["events"] += 1
                if self.verbose:
                    self.record("event", "", kind="event", event=ev.NAME,
                                **{k: v for k, v in _event_fields(ev).items()})
                self._dispatch(ev)
        if overflow:
            size = self.pm.subscribe().grow()
            self.record("overflow", "the kernel dropped events (ENOBUFS: the subscription's "
                        "buffer was full); learning the connections again from sock_diag",
                        kind="warning", rcvbuf=size)
            self.resync()

    def _dispatch(self, ev: Event) -> None:
        p = self.policy
        kind = ev.KIND
        if kind == "listener_created":
            self._call(p.on_listener_created, ev)
            return
        if kind == "listener_closed":
            self._call(p.on_listener_closed, ev)
            return
        if ev.token is None:
            return
        conn = self.connections.get(ev.token)
        if kind == "created":
            if conn is None:
                conn = self._new_conn(ev)
                self._call(p.on_created, conn, ev)
            return
        if conn is None:
            if kind == "closed":
                return
            conn = self._new_conn(ev, learned=True)     # missed its CREATED
            self._seed_ids(conn)
        if conn.data.get("kernel_pm"):
            if kind == "closed":
                self.connections.pop(conn.token, None)
            return                      # the in-kernel PM runs it: nothing to decide
        if kind == "established":
            if not conn.established:
                conn.established, conn.established_at = True, ev.time
                self._call(p.on_established, conn, ev)
        elif kind == "closed":
            self.connections.pop(conn.token, None)
            self._call(p.on_closed, conn, ev)
        elif kind == "announced":
            conn.remote_addrs[ev.rem_id or 0] = (unmap(ev.daddr) or "", ev.dport or conn.dport)
            self._call(p.on_announced, conn, ev)
        elif kind == "removed":
            conn.remote_addrs.pop(ev.rem_id or 0, None)
            self._call(p.on_removed, conn, ev)
        elif kind in ("sub_established", "sub_closed", "sub_priority"):
            key = (unmap(ev.saddr) or "", ev.sport or 0, unmap(ev.daddr) or "", ev.dport or 0)
            sub = conn.subflows.get(key)
            if sub is None:
                sub = Subflow(*key, loc_id=ev.loc_id or 0, rem_id=ev.rem_id or 0,
                              if_idx=ev.if_idx or 0)
            if kind == "sub_established":
                sub.loc_id, sub.rem_id = ev.loc_id or 0, ev.rem_id or 0
                sub.peer_backup = bool(ev.backup)
                if key not in conn.subflows:
                    asked = conn.take_pending(key[0], key[2], key[3])
                    if asked is not None:
                        sub.backup, sub.mine = asked
                conn.subflows[key] = sub
                self._call(p.on_sub_established, conn, sub, ev)
            elif kind == "sub_closed":
                if conn.subflows.pop(key, None) is None:
                    conn.take_pending(key[0], key[2], key[3])
                self._call(p.on_sub_closed, conn, sub, ev)
            else:
                sub.peer_backup = bool(ev.backup)
                self._call(p.on_sub_priority, conn, sub, ev)

    def _new_conn(self, ev: Event, learned: bool = False) -> Connection:
        saddr, daddr = unmap(ev.saddr) or "", unmap(ev.daddr) or ""
        conn = Connection(ev.token or 0, family_of(saddr) if saddr else ev.addr_family or 0,
                          saddr, ev.sport or 0, daddr, ev.dport or 0,
                          server_side=bool(ev.server_side), learned=learned,
                          created_at=ev.time)
        if saddr and not learned:
            initial = Subflow(saddr, ev.sport or 0, daddr, ev.dport or 0)
            conn.subflows[initial.key] = initial
        self.connections[conn.token] = conn
        return conn

    # -- links -----------------------------------------------------------------------------

    def _read_links(self) -> None:
        p = self.policy
        for kind, obj in self.links.poll():
            self.record(kind, "", kind="info", **_link_fields(obj))
            self._call(getattr(p, f"on_{kind}"), obj)

    # -- learning from dumps -------------------------------------------------------------

    def resync(self, initial: bool = False) -> None:
        """Read sock_diag and reconcile the connections with what the kernel has."""
        assert self.pm is not None
        self.stats["resyncs"] += 0 if initial else 1
        with sockdiag.SockDiag(self.pm._fd) as diag:
            found = diag.connections()           # MPTCP sockets, their subflows by token
        listening = {(c.local.addr, c.local.port) for c in found
                     if c.state == sockdiag.TCP_LISTEN}
        wildcard = {port for addr, port in listening if addr in ("0.0.0.0", "::")}
        live = {c.mptcp_info.mptcpi_token: c for c in found
                if c.state != sockdiag.TCP_LISTEN and c.mptcp_info is not None
                and c.mptcp_info.mptcpi_token}
        for token in list(self.connections):
            if token not in live:
                conn = self.connections.pop(token)
                self.record("forget", "connection closed while events were lost", conn=conn,
                            kind="info")
                self._call(self.policy.on_closed, conn, None)
        learned: list[Connection] = []
        caught_up: list[Connection] = []
        for token, c in live.items():
            saddr, daddr = c.local.addr, c.remote.addr
            conn = self.connections.get(token)
            fresh = conn is None
            if fresh:
                server = (saddr, c.local.port) in listening or c.local.port in wildcard
                conn = Connection(token, family_of(saddr), saddr, c.local.port, daddr,
                                  c.remote.port, server_side=server, learned=True,
                                  created_at=time.time())
                self.connections[token] = conn
            seen = {}
            was_established = conn.established
            for s in c.subflows:
                key = (s.local.addr, s.local.port, s.remote.addr, s.remote.port)
                sub = conn.subflows.get(key)
                if sub is None:
                    sub = Subflow(*key, loc_id=s.id_loc or 0, rem_id=s.id_rem or 0,
                                  if_idx=s.ifindex)
                    if conn.take_pending(key[0], key[2], key[3]) is not None:
                        sub.mine = True            # one we asked for: no longer on its way
                sub.backup = s.backup_local          # this end's wish (B flag or MP_PRIO)
                seen[key] = sub
                if s.fully_established:
                    conn.established = True
            conn.subflows = seen
            if fresh:
                self._seed_ids(conn)
                learned.append(conn)
            elif conn.established and not was_established:
                caught_up.append(conn)              # its ESTABLISHED event was lost
        self.stats["learned"] += len(learned)
        if learned or not initial:
            self.record("learned" if initial else "resync",
                        f"{len(learned)} connection(s) found in the sock_diag dump"
                        + (f", {len(caught_up)} found established" if caught_up else ""),
                        kind="info", tokens=[f"{c.token:08x}" for c in learned])
        for conn in caught_up:
            if not conn.data.get("kernel_pm"):
                conn.established_at = time.time()
                self._call(self.policy.on_established, conn, None)
        for conn in learned:
            if conn.data.get("kernel_pm"):
                self.record("ignore", "opened under the in-kernel path manager, which keeps "
                            "managing it", conn=conn, kind="info")
                continue
            self._call(self.policy.on_created, conn, None)
            if conn.established:
                conn.established_at = time.time()
                self._call(self.policy.on_established, conn, None)

    def _seed_ids(self, conn: Connection) -> None:
        """The local address ids the kernel already has for a connection (userspace PM)."""
        assert self.pm is not None
        try:
            for a in self.pm.addresses(conn.token):
                if a["addr"]:
                    conn.local_ids[(a["addr"], a["port"] or 0)] = a["id"]
        except (PmError, MissingTool):
            conn.data["kernel_pm"] = True        # created under the in-kernel PM

    # -- verbs -----------------------------------------------------------------------------

    def _verb(self, policy: Policy, conn: Connection, action: str, reason: str,
              fn: Callable[[], Any], **fields: Any) -> Outcome:
        t0 = time.time()
        try:
            fn()
        except PmError as exc:
            self.stats["errors"] += 1
            self.record(action, reason, conn=conn, policy=policy, ok=False,
                        error=exc.extack or str(exc), **fields)
            return Outcome(False, exc.extack or str(exc), exc.errno)
        t1 = time.time()
        extra = {}
        if action == "subflow_create":
            extra = {"since_created_ms": round((t1 - conn.created_at) * 1e3, 3)
                     if conn.created_at and not conn.learned else None,
                     "since_established_ms": round((t1 - conn.established_at) * 1e3, 3)
                     if conn.established_at else None,
                     "took_ms": round((t1 - t0) * 1e3, 3)}
        self.record(action, reason, conn=conn, policy=policy, ok=True, **fields, **extra)
        return Outcome(True)

    def verb_subflow_create(self, policy: Policy, conn: Connection, local: str,
                            remote: str | None, remote_port: int | None,
                            local_port: int | None, local_id: int | None, dev: str | None,
                            backup: bool, reason: str) -> Outcome:
        assert self.pm is not None
        remote = remote or conn.daddr
        remote_port = remote_port or conn.dport
        lid = local_id if local_id is not None else conn.local_id(local, local_port or 0)
        if local_id is not None:
            conn.local_ids[(local, local_port or 0)] = local_id
        pm = self.pm
        ok = self._verb(policy, conn, "subflow_create", reason,
                        lambda: pm.subflow_create(conn.token, local, remote, remote_port,
                                                  local_id=lid, local_port=local_port,
                                                  dev=dev, backup=backup),
                        local=local, local_port=local_port, local_id=lid, remote=remote,
                        remote_port=remote_port, backup=backup or None, dev=dev)
        if ok:
            if local_port:
                key = (local, local_port, remote, remote_port)
                conn.subflows.setdefault(key, Subflow(*key, loc_id=lid, backup=backup,
                                                      mine=True))
            else:
                conn.pending.append((local, remote, remote_port, backup))
        return ok

    def verb_subflow_destroy(self, policy: Policy, conn: Connection, sub: Subflow,
                             reason: str) -> Outcome:
        assert self.pm is not None
        pm = self.pm
        return self._verb(policy, conn, "subflow_destroy", reason,
                          lambda: pm.subflow_destroy(conn.token, sub.saddr, sub.sport,
                                                     sub.daddr, sub.dport),
                          subflow=str(sub))

    def verb_set_backup(self, policy: Policy, conn: Connection, sub: Subflow, backup: bool,
                        reason: str) -> Outcome:
        assert self.pm is not None
        pm = self.pm
        ok = self._verb(policy, conn, "set_backup" if backup else "set_nobackup", reason,
                        lambda: pm.set_flags(conn.token, sub.saddr, sub.daddr, backup,
                                             local_port=sub.sport, remote_port=sub.dport),
                        subflow=str(sub))
        if ok:
            sub.backup = backup
        return ok

    def verb_announce(self, policy: Policy, conn: Connection, addr: str, port: int | None,
                      id: int | None, reason: str) -> Outcome:
        assert self.pm is not None
        lid = id if id is not None else conn.local_id(addr, port or 0)
        pm = self.pm
        return self._verb(policy, conn, "announce", reason,
                          lambda: pm.announce(conn.token, addr, lid, port=port),
                          addr=addr, port=port, id=lid)

    def verb_remove(self, policy: Policy, conn: Connection, id: int, reason: str) -> Outcome:
        assert self.pm is not None
        pm = self.pm
        return self._verb(policy, conn, "remove", reason, lambda: pm.remove(conn.token, id),
                          id=id)


def _event_fields(ev: Event) -> dict[str, Any]:
    out = {}
    for name in ("token", "loc_id", "rem_id", "saddr", "daddr", "sport", "dport", "backup",
                 "error", "if_idx", "reset_reason", "reset_flags"):
        value = getattr(ev, name)
        if value is not None:
            out[name] = value
    return out


def _link_fields(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "addr"):
        return {"addr": obj.addr, "ifname": obj.ifname}
    return {"ifname": obj.name, "ifindex": obj.index}

