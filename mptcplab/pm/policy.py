"""The policy API: a path-manager policy is a small class with `on_<event>` methods that call
the userspace-PM verbs. The daemon keeps the state (connections, their subflows, the peer's
announced addresses, the namespace's links and addresses) and calls the methods; every verb
logs its decision with the reason the policy gives.

    from mptcplab.pm.policy import Policy

    class TwoPaths(Policy):
        '''One extra subflow from every other local address.'''

        def on_established(self, conn, event):
            for a in self.local_addresses(conn.family):
                if a.addr != conn.saddr:
                    self.subflow_create(conn, a.addr, reason=f"{a.ifname} is up")

Hooks (all optional; `event` is the typed Event, or None when the daemon learned the
connection from a dump rather than from an event):
    on_start(), on_stop()
    on_created(conn, event), on_established(conn, event), on_closed(conn, event)
    on_announced(conn, event), on_removed(conn, event)
    on_sub_established(conn, sub, event), on_sub_closed(conn, sub, event),
    on_sub_priority(conn, sub, event)
    on_listener_created(event), on_listener_closed(event)
    on_link_up(link), on_link_down(link), on_address_added(addr), on_address_removed(addr)
Verbs: subflow_create, subflow_destroy, set_backup, announce, remove; and log(), after()
(a timer), local_addresses(), link(), connections.
The built-in policies (mptcplab/pm/policies/) use nothing else; docs/pm.md has a complete
example.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mptcplab.errors import BadInput, ExitStatus, LabError

if TYPE_CHECKING:
    from mptcplab.pm.daemon import Daemon
    from mptcplab.pm.events import Event
    from mptcplab.pm.links import Link, LocalAddress

Key = tuple[str, int, str, int]        # saddr, sport, daddr, dport


def unmap(addr: str | None) -> str | None:
    """::ffff:10.0.1.1 -> 10.0.1.1 (an IPv4 subflow of an IPv6 socket, as sock_diag shows
    it); other addresses as they are (already in the form inet_ntop writes)."""
    if addr is None or not addr.startswith("::ffff:"):
        return addr
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@dataclass(frozen=True)
class Outcome:
    """What a verb did: true when the kernel accepted it; else the kernel's words and errno."""

    ok: bool
    error: str = ""
    errno: int = 0

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Subflow:
    """One subflow of a connection, as the daemon knows it."""

    saddr: str
    sport: int
    daddr: str
    dport: int
    loc_id: int = 0
    rem_id: int = 0
    backup: bool = False          # this end asked for backup (B flag / MP_PRIO we sent)
    peer_backup: bool = False     # the peer marked it backup
    if_idx: int = 0
    mine: bool = False            # opened by this daemon

    @property
    def key(self) -> Key:
        return (self.saddr, self.sport, self.daddr, self.dport)

    def __str__(self) -> str:
        return f"{_ep(self.saddr, self.sport)} -> {_ep(self.daddr, self.dport)}"


@dataclass
class Connection:
    """An MPTCP connection of the namespace, kept current by the daemon."""

    token: int
    family: int
    saddr: str
    sport: int
    daddr: str
    dport: int
    server_side: bool = False
    established: bool = False
    learned: bool = False          # found in a dump, not announced by a CREATED event
    created_at: float = 0.0
    established_at: float = 0.0
    subflows: dict[Key, Subflow] = field(default_factory=dict)
    remote_addrs: dict[int, tuple[str, int]] = field(default_factory=dict)
    local_ids: dict[tuple[str, int], int] = field(default_factory=dict)
    # subflows asked for (with an ephemeral port) and not yet established or closed:
    # (saddr, daddr, dport, backup), oldest first
    pending: list[tuple[str, str, int, bool]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)   # free for the policy's own notes

    def __post_init__(self) -> None:
        self.remote_addrs.setdefault(0, (self.daddr, self.dport))
        self.local_ids.setdefault((self.saddr, 0), 0)

    def __str__(self) -> str:
        return f"{self.token:08x}"

    def local_id(self, addr: str, port: int = 0) -> int:
        """The address id this connection uses for addr (and port): 0 for the initial
        subflow's address, else the one given before, else the lowest free one. (The kernel
        files a subflow's local port with its address: a second subflow from the same
        address with another fixed port needs an id of its own.)"""
        key = (addr, port or 0)
        if key in self.local_ids:
            return self.local_ids[key]
        used = set(self.local_ids.values())
        for i in range(1, 256):
            if i not in used:
                self.local_ids[key] = i
                return i
        raise LabError(f"connection {self}: all 255 address ids are in use")

    def subflows_between(self, saddr: str | None = None, daddr: str | None = None
                         ) -> list[Subflow]:
        """The subflows from saddr and/or to daddr (established, or asked for with a fixed
        source port)."""
        return [s for s in self.subflows.values()
                if (saddr is None or s.saddr == saddr) and (daddr is None or s.daddr == daddr)]

    def opening(self, saddr: str | None = None, daddr: str | None = None) -> int:
        """How many subflows from saddr and/or to daddr were asked for and are still on
        their way (not yet established nor failed)."""
        return sum(1 for s, d, _, _ in self.pending
                   if (saddr is None or s == saddr) and (daddr is None or d == daddr))

    def take_pending(self, saddr: str, daddr: str, dport: int) -> tuple[bool, bool] | None:
        """The backup flag asked for a subflow that just settled, if this end asked for it."""
        for i, (s, d, p, backup) in enumerate(self.pending):
            if (s, d, p) == (saddr, daddr, dport):
                del self.pending[i]
                return backup, True
        return None


class Policy:
    """Base of every policy. Subclasses override the hooks they need (see the module
    docstring) and take their arguments in __init__ (annotated: the command line's words
    are converted to those types)."""

    name: ClassVar[str] = ""
    daemon: Daemon

    # -- hooks --------------------------------------------------------------------------

    def on_start(self) -> None:
        """The daemon is subscribed and has learned the connections already open."""

    def on_stop(self) -> None:
        """The daemon is stopping (SIGTERM, Ctrl-C): a last chance to undo things."""

    def on_created(self, conn: Connection, event: Event | None) -> None: ...
    def on_established(self, conn: Connection, event: Event | None) -> None: ...
    def on_closed(self, conn: Connection, event: Event | None) -> None: ...
    def on_announced(self, conn: Connection, event: Event) -> None: ...
    def on_removed(self, conn: Connection, event: Event) -> None: ...
    def on_sub_established(self, conn: Connection, sub: Subflow, event: Event | None) -> None:
        ...
    def on_sub_closed(self, conn: Connection, sub: Subflow, event: Event | None) -> None: ...
    def on_sub_priority(self, conn: Connection, sub: Subflow, event: Event) -> None: ...
    def on_listener_created(self, event: Event) -> None: ...
    def on_listener_closed(self, event: Event) -> None: ...
    def on_link_up(self, link: Link) -> None: ...
    def on_link_down(self, link: Link) -> None: ...
    def on_address_added(self, addr: LocalAddress) -> None: ...
    def on_address_removed(self, addr: LocalAddress) -> None: ...

    # -- what the policy can see ----------------------------------------------------------

    @property
    def connections(self) -> dict[int, Connection]:
        """token -> Connection, every connection of the namespace the daemon knows."""
        return self.daemon.connections

    def local_addresses(self, family: int | None = None) -> list[LocalAddress]:
        """Global addresses on links that are up with a carrier."""
        return self.daemon.links.usable_addresses(family)

    def link(self, name: str) -> Link | None:
        return self.daemon.links.link_by_name(name)

    def address_of(self, ifname: str, family: int) -> str | None:
        """The first usable address of that family on interface `ifname`."""
        for a in self.daemon.links.addresses.values():
            if a.ifname == ifname and a.family == family:
                return a.addr
        return None

    # -- verbs (each logs the decision; the Outcome is true when the kernel accepted it) ---

    def subflow_create(self, conn: Connection, local: str, remote: str | None = None,
                       remote_port: int | None = None, *, local_port: int | None = None,
                       local_id: int | None = None, dev: str | None = None,
                       backup: bool = False, reason: str = "") -> Outcome:
        """Open a subflow from `local` (to the connection's remote address and port unless
        given). The local address id is chosen per connection unless `local_id` is given."""
        return self.daemon.verb_subflow_create(self, conn, local, remote, remote_port,
                                               local_port, local_id, dev, backup, reason)

    def subflow_destroy(self, conn: Connection, sub: Subflow, reason: str = "") -> Outcome:
        return self.daemon.verb_subflow_destroy(self, conn, sub, reason)

    def set_backup(self, conn: Connection, sub: Subflow, backup: bool,
                   reason: str = "") -> Outcome:
        """Mark one subflow backup (or not): MP_PRIO to the peer, and this end's scheduler
        prefers the others."""
        return self.daemon.verb_set_backup(self, conn, sub, backup, reason)

    def announce(self, conn: Connection, addr: str, port: int | None = None,
                 id: int | None = None, reason: str = "") -> Outcome:
        return self.daemon.verb_announce(self, conn, addr, port, id, reason)

    def remove(self, conn: Connection, id: int, reason: str = "") -> Outcome:
        return self.daemon.verb_remove(self, conn, id, reason)

    def log(self, action: str, reason: str, conn: Connection | None = None,
            **fields: Any) -> None:
        """Record a decision that calls no verb (e.g. why nothing was done)."""
        self.daemon.record(action, reason, conn=conn, policy=self, **fields)

    def after(self, seconds: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call fn(*args) from the daemon's loop `seconds` from now."""
        self.daemon.after(seconds, fn, *args)

    def describe(self) -> str:
        """One line for the daemon's start-up log."""
        return (inspect.getdoc(self) or self.name).splitlines()[0]


def _ep(addr: str, port: int | None) -> str:
    text = f"[{addr}]" if ":" in addr and port else addr
    return f"{text}:{port}" if port else text


# -- finding and building policies ---------------------------------------------------------------

BUILTIN = {
    "subflows": "mptcplab.pm.policies.subflows:Subflows",
    "ndiffports": "mptcplab.pm.policies.ndiffports:NDiffPorts",
    "fullmesh": "mptcplab.pm.policies.fullmesh:FullMesh",
    "backup-preference": "mptcplab.pm.policies.backup_preference:BackupPreference",
}


def builtin_names() -> list[str]:
    return list(BUILTIN)


def policy_class(spec: str) -> type[Policy]:
    """A built-in policy by name, or the Policy subclass defined in a .py file."""
    if spec in BUILTIN:
        mod, _, cls = BUILTIN[spec].partition(":")
        return getattr(importlib.import_module(mod), cls)
    if not spec.endswith(".py") and os.sep not in spec:
        raise BadInput(f"no policy {spec!r}: use one of {', '.join(BUILTIN)} or a .py file",
                       ExitStatus.USAGE)
    path = Path(spec)
    if not path.is_file():
        raise BadInput(f"policy file {spec} not found")
    name = f"mptcplab_policy_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:           # the user's file: say where it broke, in one line
        raise BadInput(f"policy file {spec}: {type(exc).__name__}: {exc}") from None
    found = getattr(module, "policy", None)
    if isinstance(found, type) and issubclass(found, Policy):
        return found
    classes = [c for c in vars(module).values() if isinstance(c, type) and
               issubclass(c, Policy) and c.__module__ == name]
    if len(classes) != 1:
        raise BadInput(f"policy file {spec} defines {len(classes)} Policy subclasses; "
                       "define one (or name it with `policy = MyPolicy`)")
    return classes[0]


def make_policy(spec: str, words: list[str]) -> Policy:
    """Build the policy `spec` with the command line's words as its __init__ arguments."""
    cls = policy_class(spec)
    sig = inspect.signature(cls.__init__)
    params = [p for p in list(sig.parameters.values())[1:]
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    usage = " ".join(p.name.upper() if p.default is inspect.Parameter.empty
                     else f"[{p.name.upper()}]" for p in params)
    label = spec if spec in BUILTIN else cls.__name__
    if len(words) < len(required) or len(words) > len(params):
        raise BadInput(f"policy {label} takes {usage or 'no arguments'}"
                       f" (got {len(words)}: {' '.join(words) or 'none'})", ExitStatus.USAGE)
    hints = inspect.get_annotations(cls.__init__, eval_str=True)
    args = []
    for p, word in zip(params, words):
        kind = hints.get(p.name, str)
        try:
            value = kind(word) if kind in (int, float, str) else word
        except ValueError:
            raise BadInput(f"policy {label}: {p.name.upper()} must be "
                           f"{'a whole number' if kind is int else 'a number'}, got {word!r}",
                           ExitStatus.USAGE) from None
        args.append(value)
    try:
        policy = cls(*args)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"policy {label}: {exc}", ExitStatus.USAGE) from None
    if not policy.name:
        policy.name = label
    return policy
