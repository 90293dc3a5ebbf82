"""`PathManager`: the whole `mptcp_pm` family from Python, in any network namespace.

    from mptcplab.pm import PathManager

    with PathManager(netns="mptl-k3x9q-client") as pm:           # or a lab node: lab["client"].pm
        pm.endpoint("add", addr="10.0.2.1", flags=["subflow"])   # in-kernel path manager
        pm.limits("set", subflows=2, add_addr_accepted=2)
        for ev in pm.events(timeout=10):                         # the mptcp_pm_events group
            if ev.KIND == "established" and not ev.server_side:  # userspace path manager
                pm.subflow_create(ev.token, local="10.0.2.1", remote=ev.daddr,
                                  remote_port=ev.dport)

In-kernel PM (endpoints, limits) keeps pyroute2's verb-first shape: `endpoint(verb, ...)` and
`limits(verb, ...)` return plain dicts. The userspace-PM verbs are methods named after the
commands: `announce`, `remove`, `subflow_create`, `subflow_destroy`, `set_flags` (and
`addresses(token)`, GET_ADDR with a token). Every refusal is a `PmError` (a LabError) whose
message is the kernel's own extended-ack text, with an exit status that says what went wrong.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, Self

from mptcplab import namespaces
from mptcplab.errors import BadInput, ExitStatus, LabError, MissingTool, NotRoot
from mptcplab.pm import netlink as nl
from mptcplab.pm.events import Event, make_event

DEFAULT_EVENT_RCVBUF = 4 << 20


class PmError(LabError):
    """The kernel refused a path-manager command (`errno`, `extack` as the kernel said it)."""

    def __init__(self, message: str, status: ExitStatus, errno_: int = 0,
                 extack: str = "") -> None:
        super().__init__(message, status)
        self.errno = errno_
        self.extack = extack


def _status(code: int) -> ExitStatus:
    if code in (errno.EPERM, errno.EACCES):
        return ExitStatus.NOT_ROOT
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EPROTONOSUPPORT):
        return ExitStatus.MISSING_TOOL
    if code in (errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.ERANGE, errno.EBADF,
                errno.ENODEV, errno.EADDRNOTAVAIL, errno.ESRCH):
        return ExitStatus.BAD_INPUT
    return ExitStatus.ERROR


def pm_error(exc: nl.NetlinkError, what: str) -> PmError:
    """One line: what was asked, then the kernel's words (its extack, else strerror). The
    kernel wraps some failures as EINVAL with the real one in the text (`connect error: -98`):
    that one is the error's errno."""
    code = exc.errno or errno.EIO
    inner = re.search(r"error: -(\d+)$", exc.extack or "")
    if inner and int(inner.group(1)) in errno.errorcode:
        code = int(inner.group(1))
    if code in (errno.EPERM, errno.EACCES):
        return PmError(f"{what} needs root (CAP_NET_ADMIN in this network namespace): run it "
                       "with sudo", ExitStatus.NOT_ROOT, code, exc.extack)
    words = exc.extack or os.strerror(code)
    if exc.extack and os.strerror(code).lower() not in exc.extack.lower():
        words = f"{exc.extack} ({os.strerror(code)})"
    return PmError(f"{what}: {words}", _status(code), code, exc.extack)


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return nl.parse_ip(str(value).split("%")[0])
    except ValueError:
        raise BadInput(f"{what}: {value!r} is not an IPv4 or IPv6 address") from None


def _check_range(value: int | None, lo: int, hi: int, what: str) -> None:
    if value is not None and not (isinstance(value, int) and lo <= value <= hi):
        raise BadInput(f"{what} {value!r} out of range {lo}-{hi}")


def endpoint_dict(addr_nest: dict[str, Any]) -> dict[str, Any]:
    """An `address` nest as the lab shows an endpoint: id, addr, port, flags, ifindex."""
    flags = addr_nest.get("MPTCP_PM_ADDR_ATTR_FLAGS") or 0
    out = {
        "id": addr_nest.get("MPTCP_PM_ADDR_ATTR_ID"),
        "addr": addr_nest.get("MPTCP_PM_ADDR_ATTR_ADDR4")
        or addr_nest.get("MPTCP_PM_ADDR_ATTR_ADDR6"),
        "port": addr_nest.get("MPTCP_PM_ADDR_ATTR_PORT") or None,
        "flags": nl.flags_names(flags),
        "ifindex": addr_nest.get("MPTCP_PM_ADDR_ATTR_IF_IDX") or None,
    }
    unknown = flags & ~sum(nl.FLAGS.values())
    if unknown:
        out["rawflags"] = unknown
    return out


def open_netns(netns: str | int | None) -> tuple[int | None, bool]:
    """An fd on the namespace `netns` names (a name under /run/netns, a path, or an fd we do
    not own); (None, False) for this process's own namespace."""
    if netns is None:
        return None, False
    if isinstance(netns, int):
        return netns, False
    path = netns if "/" in netns else os.path.join(namespaces.NETNS_DIR, netns)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), True
    except FileNotFoundError:
        raise BadInput(f"no network namespace {netns!r} (see `ip netns list`)") from None
    except PermissionError:
        raise NotRoot(f"entering network namespace {netns} needs root "
                      "(CAP_SYS_ADMIN): run it with sudo") from None


def in_netns(fd: int | None, fn: Any, *args: Any) -> Any:
    """fn(*args) inside the namespace open at fd (in this thread when fd is None)."""
    if fd is None:
        return fn(*args)
    try:
        return namespaces.run(fd, fn, *args)
    except PermissionError as exc:
        raise NotRoot(f"entering a network namespace needs root (CAP_SYS_ADMIN): "
                      f"{exc.strerror}") from None


class PathManager:
    """The `mptcp_pm` family in one network namespace (see the module docstring).

    `netns`: a namespace name (`ip netns list`), a path such as /proc/PID/ns/net, an open fd
    (not closed here), or None for the calling thread's namespace. Sockets stay bound to the
    namespace they were opened in, so the object can be used from any thread afterwards.
    """

    def __init__(self, netns: str | int | None = None, *,
                 sock: socket.socket | None = None) -> None:
        self.netns = netns
        self._fd, self._own_fd = (None, False) if sock is not None else open_netns(netns)
        self._events: nl.EventSocket | None = None
        self._pending: list[Event] = []
        self.enobufs = 0
        try:
            if sock is None:
                sock = in_netns(self._fd, nl.open_socket)
            try:
                self.genl = nl.GenlSocket(sock)
            except nl.NetlinkError as exc:
                sock.close()
                if exc.errno == errno.ENOENT:
                    raise MissingTool(str(exc)) from None
                raise pm_error(exc, "looking up the mptcp_pm family") from None
        except BaseException:
            self._close_fd()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PathManager netns={self.netns!r}>"

    def close(self) -> None:
        self.unsubscribe()
        self.genl.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
            self._fd, self._own_fd = None, False

    # -- plumbing --------------------------------------------------------------------------

    @property
    def family(self) -> nl.Family:
        return self.genl.family

    def supports(self, cmd: int) -> bool:
        """Does this kernel's mptcp_pm family have the command? (its own list of ops)"""
        return cmd in self.family.ops

    def require(self, cmd: int, *attrs: str) -> None:
        """One-line MissingTool unless the kernel has `cmd` and its policy takes `attrs`."""
        name = nl.COMMAND_NAMES.get(cmd, str(cmd))
        if not self.supports(cmd):
            raise MissingTool(f"this kernel's mptcp_pm family has no {name} command "
                              "(its list of operations lacks it: the kernel is older)")
        if attrs:
            accepted = self.genl.policy(cmd)
            if accepted is None:
                return
            for a in attrs:
                if nl.PM_CODEC.index[a] not in accepted:
                    raise MissingTool(f"this kernel's {name} does not take {a} "
                                      "(its netlink policy lacks it)")

    def _do(self, cmd: int, attrs: list[tuple[str, Any]], what: str,
            dump: bool = False) -> list[dict[str, Any]]:
        try:
            return self.genl.request(cmd, attrs, dump=dump, what=what)
        except nl.NetlinkError as exc:
            if exc.errno == errno.EOPNOTSUPP and not self.supports(cmd):
                self.require(cmd)
            raise pm_error(exc, what) from None

    def ifindex(self, dev: str | int | None) -> int | None:
        """An interface name (in this namespace) or index -> its index; BadInput if none."""
        if dev is None or isinstance(dev, int):
            return dev
        try:
            return in_netns(self._fd, socket.if_nametoindex, dev)
        except OSError:
            where = f" in {self.netns}" if self.netns is not None else ""
            raise BadInput(f"no interface {dev!r}{where}") from None

    # -- in-kernel path manager: endpoints and limits ----------------------------------------

    def endpoint(self, verb: str, **kw: Any) -> list[dict[str, Any]]:
        """pyroute2's verb-first form: show | get | add | del | set | flush.

        show [token]: every endpoint (with a token: that connection's local addresses under
        a userspace PM). get: id. add: addr, id, port, flags, ifindex (or dev). del: id (and
        addr for id 0). set: id or addr (+port), flags: the backup and fullmesh bits are set
        to exactly `flags` (as `ip mptcp endpoint change` does). flush: all of them.
        """
        if verb == "show":
            return self.endpoints(kw.get("token"))
        if verb == "get":
            return [self.endpoint_get(kw["id"])]
        if verb == "flush":
            self._do(nl.MPTCP_PM_CMD_FLUSH_ADDRS, [("MPTCP_PM_ATTR_ADDR", {"attrs": []})],
                     "flushing the endpoints")
            return []
        if verb == "add":
            return [self.endpoint_add(**kw)]
        if verb == "del":
            self.endpoint_del(kw["id"], kw.get("addr"))
            return []
        if verb == "set":
            kw = dict(kw)
            if "dev" in kw:
                kw["ifindex"] = self.ifindex(kw.pop("dev"))
            self._do(nl.MPTCP_PM_CMD_SET_FLAGS,
                     [("MPTCP_PM_ATTR_ADDR", nl.address_attrs(**kw))],
                     f"changing endpoint {kw.get('id') or kw.get('addr')}")
            return []
        raise ValueError(f"unknown endpoint verb {verb!r}")

    def endpoints(self, token: int | None = None) -> list[dict[str, Any]]:
        """The endpoints (GET_ADDR dump); with `token`, the local addresses of that
        connection as its userspace path manager knows them."""
        attrs: list[tuple[str, Any]] = []
        what = "listing the endpoints"
        if token is not None:
            self.require(nl.MPTCP_PM_CMD_GET_ADDR, "MPTCP_PM_ATTR_TOKEN")
            attrs.append(("MPTCP_PM_ATTR_TOKEN", _token(token)))
            what = f"listing the addresses of connection {_token(token):08x}"
        return [endpoint_dict(r.get("MPTCP_PM_ATTR_ADDR", {}))
                for r in self._do(nl.MPTCP_PM_CMD_GET_ADDR, attrs, what, dump=True)]

    def endpoint_get(self, id: int, token: int | None = None) -> dict[str, Any]:
        _check_range(id, 0, 255, "endpoint id")
        attrs: list[tuple[str, Any]] = [("MPTCP_PM_ATTR_ADDR", nl.address_attrs(id=id))]
        if token is not None:
            attrs.append(("MPTCP_PM_ATTR_TOKEN", _token(token)))
        (reply,) = self._do(nl.MPTCP_PM_CMD_GET_ADDR, attrs, f"endpoint {id}")
        return endpoint_dict(reply.get("MPTCP_PM_ATTR_ADDR", {}))

    def endpoint_add(self, addr: str, id: int | None = None, port: int | None = None,
                     flags: Any = (), ifindex: int | None = None,
                     dev: str | int | None = None) -> dict[str, Any]:
        """Add an endpoint; return it as the kernel stored it (with the id it chose when
        `id` is None or 0)."""
        ip = _ip(addr, "endpoint address")
        _check_range(id, 0, 255, "endpoint id")
        _check_range(port, 0, 65535, "port")
        value = _flags(flags)
        if ifindex is None and dev is not None:
            ifindex = self.ifindex(dev)
        self._do(nl.MPTCP_PM_CMD_ADD_ADDR,
                 [("MPTCP_PM_ATTR_ADDR", nl.address_attrs(str(ip), id or None, port or None,
                                                          value, ifindex))],
                 f"adding endpoint {ip}")
        mine = [e for e in self.endpoints() if e["addr"] == str(ip)
                and (e["port"] or 0) == (port or 0)]
        if not mine:
            raise LabError(f"adding endpoint {ip}: the kernel acknowledged it but does not "
                           "list it")
        ep = mine[-1]
        dropped = value & ~nl.flags_value(ep["flags"]) & ~nl.MPTCP_PM_ADDR_FLAG_IMPLICIT
        if dropped:
            names = ", ".join(nl.flags_names(dropped)) or f"0x{dropped:x}"
            self.endpoint_del(ep["id"])
            raise MissingTool(f"adding endpoint {ip}: this kernel does not know the endpoint "
                              f"flag {names} (it dropped it); endpoint not added")
        return ep

    def endpoint_del(self, id: int, addr: str | None = None) -> None:
        _check_range(id, 0, 255, "endpoint id")
        if id == 0 and addr is None:
            raise BadInput("deleting endpoint id 0 needs its address (the initial subflow's)")
        self._do(nl.MPTCP_PM_CMD_DEL_ADDR,
                 [("MPTCP_PM_ATTR_ADDR", nl.address_attrs(
                     str(_ip(addr, "endpoint address")) if addr else None, id))],
                 f"deleting endpoint {id}")

    def endpoint_change(self, id: int | None = None, addr: str | None = None,
                        port: int | None = None, backup: bool | None = None,
                        fullmesh: bool | None = None) -> dict[str, Any]:
        """Change an endpoint's backup and/or fullmesh flag, leaving the other as it is
        (unlike `ip mptcp endpoint change`, which resets an unnamed one)."""
        if id is None and addr is None:
            raise BadInput("changing an endpoint needs its id or its address")
        current = None
        for e in self.endpoints():
            if (id is not None and e["id"] == id) or \
                    (id is None and e["addr"] == str(_ip(addr, "address"))
                     and (port is None or (e["port"] or 0) == port)):
                current = e
                break
        if current is None:
            raise PmError(f"changing endpoint {id if id is not None else addr}: address not "
                          "found", ExitStatus.BAD_INPUT, errno.EINVAL, "address not found")
        names = set(current["flags"])
        for name, want in (("backup", backup), ("fullmesh", fullmesh)):
            if want is True:
                names.add(name)
            elif want is False:
                names.discard(name)
        value = nl.flags_value(sorted(names)) & (nl.MPTCP_PM_ADDR_FLAG_BACKUP
                                                 | nl.MPTCP_PM_ADDR_FLAG_FULLMESH)
        self._do(nl.MPTCP_PM_CMD_SET_FLAGS,
                 [("MPTCP_PM_ATTR_ADDR", nl.address_attrs(id=current["id"], flags=value))],
                 f"changing endpoint {current['id']}")
        return self.endpoint_get(current["id"])

    def limits(self, verb: str = "show", subflows: int | None = None,
               add_addr_accepted: int | None = None) -> dict[str, int]:
        """show | set: the in-kernel PM's limits; returns them as the kernel now has them."""
        if verb == "set":
            if subflows is None and add_addr_accepted is None:
                raise BadInput("limits set needs subflows N and/or add_addr_accepted N")
            for what, v in (("subflows", subflows), ("add_addr_accepted", add_addr_accepted)):
                if v is not None and (not isinstance(v, int) or v < 0 or v > 0xFFFFFFFF):
                    raise BadInput(f"{what} limit {v!r} is not a whole number")
            self._do(nl.MPTCP_PM_CMD_SET_LIMITS, nl.limits_attrs(subflows, add_addr_accepted),
                     "setting the limits")
        elif verb != "show":
            raise ValueError(f"unknown limits verb {verb!r}")
        (msg,) = self._do(nl.MPTCP_PM_CMD_GET_LIMITS, [], "reading the limits")
        return {"subflows": msg.get("MPTCP_PM_ATTR_SUBFLOWS"),
                "add_addr_accepted": msg.get("MPTCP_PM_ATTR_RCV_ADD_ADDRS")}

    # -- userspace path manager --------------------------------------------------------------

    def announce(self, token: int, addr: str, id: int, port: int | None = None,
                 dev: str | int | None = None) -> None:
        """ANNOUNCE: send ADD_ADDR for `addr` (local address id `id`, 1-255) on connection
        `token`; a `port` makes the kernel listen there for joins (LISTENER_CREATED)."""
        self.require(nl.MPTCP_PM_CMD_ANNOUNCE)
        ip = _ip(addr, "address")
        _check_range(id, 1, 255, "address id")
        _check_range(port, 0, 65535, "port")
        self._do(nl.MPTCP_PM_CMD_ANNOUNCE, [
            ("MPTCP_PM_ATTR_TOKEN", _token(token)),
            ("MPTCP_PM_ATTR_ADDR", nl.address_attrs(str(ip), id, port or None,
                                                    nl.MPTCP_PM_ADDR_FLAG_SIGNAL,
                                                    self.ifindex(dev)))],
            f"announcing {ip} id {id} on connection {_token(token):08x}")

    def remove(self, token: int, id: int) -> None:
        """REMOVE: send REMOVE_ADDR for local address id `id` on connection `token` (and
        close the subflows using that address)."""
        self.require(nl.MPTCP_PM_CMD_REMOVE)
        _check_range(id, 0, 255, "address id")
        self._do(nl.MPTCP_PM_CMD_REMOVE, [("MPTCP_PM_ATTR_TOKEN", _token(token)),
                                          ("MPTCP_PM_ATTR_LOC_ID", id)],
                 f"removing address id {id} on connection {_token(token):08x}")

    def subflow_create(self, token: int, local: str, remote: str, remote_port: int,
                       local_id: int | None = None, local_port: int | None = None,
                       dev: str | int | None = None, backup: bool = False) -> None:
        """SUBFLOW_CREATE: open a subflow of connection `token` from `local` (optionally
        from `local_port`, with address id `local_id`, bound to `dev`) to
        `remote`:`remote_port`, as a backup subflow if `backup` (MP_JOIN with B set)."""
        self.require(nl.MPTCP_PM_CMD_SUBFLOW_CREATE)
        lip, rip = _ip(local, "local address"), _ip(remote, "remote address")
        _check_range(local_id, 0, 255, "local address id")
        _check_range(local_port, 0, 65535, "local port")
        _check_range(remote_port, 1, 65535, "remote port")
        self._do(nl.MPTCP_PM_CMD_SUBFLOW_CREATE, [
            ("MPTCP_PM_ATTR_TOKEN", _token(token)),
            ("MPTCP_PM_ATTR_ADDR", nl.address_attrs(
                str(lip), local_id or None, local_port or None,
                nl.MPTCP_PM_ADDR_FLAG_BACKUP if backup else None, self.ifindex(dev))),
            ("MPTCP_PM_ATTR_ADDR_REMOTE", nl.address_attrs(str(rip), port=remote_port))],
            f"creating a subflow {_ep(lip, local_port)} -> {_ep(rip, remote_port)} on "
            f"connection {_token(token):08x}")

    def subflow_destroy(self, token: int, local: str, local_port: int, remote: str,
                        remote_port: int) -> None:
        """SUBFLOW_DESTROY: close the subflow with exactly these four-tuple values."""
        self.require(nl.MPTCP_PM_CMD_SUBFLOW_DESTROY)
        lip, rip = _ip(local, "local address"), _ip(remote, "remote address")
        _check_range(local_port, 1, 65535, "local port")
        _check_range(remote_port, 1, 65535, "remote port")
        self._do(nl.MPTCP_PM_CMD_SUBFLOW_DESTROY, [
            ("MPTCP_PM_ATTR_TOKEN", _token(token)),
            ("MPTCP_PM_ATTR_ADDR", nl.address_attrs(str(lip), port=local_port)),
            ("MPTCP_PM_ATTR_ADDR_REMOTE", nl.address_attrs(str(rip), port=remote_port))],
            f"destroying subflow {_ep(lip, local_port)} -> {_ep(rip, remote_port)} on "
            f"connection {_token(token):08x}")

    def set_flags(self, token: int, local: str, remote: str, backup: bool,
                  local_port: int | None = None, remote_port: int | None = None) -> None:
        """SET_FLAGS with a token: mark the subflow(s) local -> remote as backup or not; the
        kernel sends MP_PRIO on them (SF_PRIO event)."""
        self.require(nl.MPTCP_PM_CMD_SET_FLAGS, "MPTCP_PM_ATTR_TOKEN",
                     "MPTCP_PM_ATTR_ADDR_REMOTE")
        lip, rip = _ip(local, "local address"), _ip(remote, "remote address")
        _check_range(local_port, 0, 65535, "local port")
        _check_range(remote_port, 0, 65535, "remote port")
        self._do(nl.MPTCP_PM_CMD_SET_FLAGS, [
            ("MPTCP_PM_ATTR_TOKEN", _token(token)),
            ("MPTCP_PM_ATTR_ADDR", nl.address_attrs(
                str(lip), port=local_port or None,
                flags=nl.MPTCP_PM_ADDR_FLAG_BACKUP if backup else 0)),
            ("MPTCP_PM_ATTR_ADDR_REMOTE", nl.address_attrs(str(rip), port=remote_port or None))],
            f"marking subflow {_ep(lip, local_port)} -> {_ep(rip, remote_port)} "
            f"{'backup' if backup else 'not backup'} on connection {_token(token):08x}")

    def addresses(self, token: int) -> list[dict[str, Any]]:
        """The local addresses (ids, flags) a userspace PM has for connection `token`."""
        return self.endpoints(token)

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, rcvbuf: int = DEFAULT_EVENT_RCVBUF) -> nl.EventSocket:
        """Join the events group (idempotent). Events are queued by the kernel from now on,
        up to `rcvbuf` bytes; past that it drops them and the next read says ENOBUFS."""
        if self._events is None:
            sock = in_netns(self._fd, nl.open_socket, rcvbuf)
            try:
                self._events = nl.EventSocket(sock, self.family)
            except nl.NetlinkError as exc:
                sock.close()
                raise MissingTool(str(exc)) from None
            except PermissionError:
                sock.close()
                raise NotRoot("subscribing to the mptcp_pm events needs root "
                              "(CAP_NET_ADMIN): run it with sudo") from None
        return self._events

    def unsubscribe(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def event_fileno(self) -> int:
        return self.subscribe().fileno()

    def read_events(self, block: bool = True) -> list[Event]:
        """The events of the next queued datagram (blocking until there is one, unless
        `block` is false: then BlockingIOError when none). On overflow raises
        OSError(ENOBUFS), counted in `self.enobufs`: events were lost."""
        sub = self.subscribe()
        now = time.time()
        try:
            batch = sub.read(block)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.enobufs += 1
            raise
        return [make_event(t, a, now) for t, a in batch]

    def events(self, timeout: float | None = None, idle: float | None = None
               ) -> Iterator[Event]:
        """Subscribe and yield events as they come: until `timeout` seconds have passed in
        all, or `idle` seconds went by without one (None: forever). Raises OSError(ENOBUFS)
        if the kernel dropped events because they were not read fast enough."""
        sub = self.subscribe()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._pending:
                yield self._pending.pop(0)
            wait = idle
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            ready, _, _ = select.select([sub.fileno()], [], [], wait)
            if not ready:
                return                           # idle, or the time is up
            self._pending.extend(self.read_events())


def _token(token: int | str) -> int:
    if isinstance(token, str):
        token = parse_token(token)
    if not isinstance(token, int) or not 0 <= token <= 0xFFFFFFFF:
        raise BadInput(f"token {token!r} is not a 32-bit number")
    return token


def parse_token(text: str) -> int:
    """A token as `ip mptcp monitor` and `mptcplab pm monitor` print it: hexadecimal
    (`5bcbd147`, with or without 0x)."""
    t = text.strip().lower()
    t = t.removeprefix("0x")
    try:
        value = int(t, 16)
    except ValueError:
        raise BadInput(f"token {text!r} is not hexadecimal (as `pm monitor` prints it, "
                       "e.g. 5bcbd147)") from None
    if not 0 <= value <= 0xFFFFFFFF or len(t) > 8:
        raise BadInput(f"token {text!r} is longer than 32 bits")
    return value


def _flags(flags: Any) -> int:
    try:
        return nl.flags_value(flags or 0)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _ep(ip: Any, port: int | None) -> str:
    text = f"[{ip}]" if ip.version == 6 and port else str(ip)
    return f"{text}:{port}" if port else text
