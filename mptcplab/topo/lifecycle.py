"""What keeps labs from leaking: state files, signal handling, `clean()` and `down()`.

Each lab writes `STATE_DIR/<id>.json` (owner pid and start time, namespace names) *before*
creating anything. `clean()` removes the namespaces of labs whose owner is gone (a crash, a
SIGKILL) and namespaces no state file claims; it leaves alone the labs of running processes and
the labs brought up on purpose with `mptcplab topo up` (remove those with `down()`).
Only names carrying PREFIX are ever touched, and only processes inside those namespaces killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mptcplab import privileges
from mptcplab.errors import BadInput, LabError
from mptcplab import namespaces as ns
from mptcplab.topo.naming import PREFIX, STATE_DIR, lab_namespaces, parse_ns_name

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LabTerminated(KeyboardInterrupt, SystemExit):
    """SIGTERM or SIGHUP while a lab runs: unwinds like Ctrl-C so the lab is torn down, and
    (a SystemExit) ends the program with 128 + the signal's number, 143 or 129, without a
    traceback. Code that stops on KeyboardInterrupt (pytest, the CLI) stops on it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
        self.code = 128 + signum
        self.reported = False       # the one line was printed (by the lab that tore down)


# -- signals ---------------------------------------------------------------------------------

@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP for the few milliseconds of a build or teardown step, then
    deliver them: a namespace is never half-created or half-removed by an interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in pending[:1]:
            handler = old[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(s)


_term_lock = threading.Lock()
_term_users = 0
_term_saved: dict[int, Any] = {}


def _raise_terminated(signum: int, _frame: object) -> None:
    raise LabTerminated(signum)


def hold_termination() -> None:
    """While a lab runs, SIGTERM/SIGHUP raise LabTerminated instead of killing the process
    outright (only where they had the default action; only in the main thread)."""
    global _term_users
    if threading.current_thread() is not threading.main_thread():
        return
    with _term_lock:
        if _term_users == 0:
            for s in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(s) == signal.SIG_DFL:
                    _term_saved[s] = signal.signal(s, _raise_terminated)
        _term_users += 1


def release_termination() -> None:
    global _term_users
    if threading.current_thread() is not threading.main_thread():
        return
    with _term_lock:
        _term_users = max(0, _term_users - 1)
        if _term_users == 0:
            for s, h in _term_saved.items():
                if signal.getsignal(s) is _raise_terminated:
                    signal.signal(s, h)
            _term_saved.clear()


# -- state files -----------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot): tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _who() -> str:
    """Who starts a lab, for `topo list` on a shared machine: the user behind sudo if any."""
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (sudo)" if sudo and sudo != name else name


@dataclass
class LabState:
    id: str
    topology: str
    pid: int
    start: int | None
    namespaces: list[str] = field(default_factory=list)
    detached: bool = False
    created: float = field(default_factory=time.time)
    owner: str = ""             # who started it (user, sudo user)
    command: str = ""           # the command line that started it

    @property
    def path(self) -> str:
        return os.path.join(STATE_DIR, f"{self.id}.json")

    @property
    def owner_alive(self) -> bool:
        return _start_time(self.pid) == self.start and self.start is not None

    def save(self) -> None:
        os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.__dict__, f)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @classmethod
    def new(cls, lab_id: str, topology: str, namespaces: list[str]) -> LabState:
        import sys

        pid = os.getpid()
        command = " ".join(os.path.basename(a) if i == 0 else a
                           for i, a in enumerate(sys.argv))[:200]
        return cls(lab_id, topology, pid, _start_time(pid), namespaces, owner=_who(),
                   command=command)

    @classmethod
    def load(cls, lab_id: str) -> LabState | None:
        try:
            with open(os.path.join(STATE_DIR, f"{lab_id}.json")) as f:
                data = json.load(f)
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            return None

    def node_netns(self, node: str) -> str | None:
        for name in self.namespaces:
            parsed = parse_ns_name(name)
            if parsed and parsed == (self.id, node):
                return name
        return None

    @property
    def nodes(self) -> list[str]:
        return [p[1] for n in self.namespaces if (p := parse_ns_name(n))]

    @property
    def running(self) -> bool:
        """Up (`topo up`) or owned by a live process, and not torn down."""
        return self.detached or self.owner_alive


def all_states() -> list[LabState]:
    try:
        names = sorted(os.listdir(STATE_DIR))
    except FileNotFoundError:
        return []
    states = [LabState.load(n[:-5]) for n in names if n.endswith(".json")]
    return [s for s in states if s is not None]


# -- removal ---------------------------------------------------------------------------------

def kill_pids(pids: list[int], grace: float = 1.0) -> list[int]:
    """SIGTERM each pid, wait up to `grace`, then SIGKILL what is left. Returns the pids."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.02)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def remove_namespaces(names: list[str]) -> list[str]:
    """Kill what runs inside them, then unmount and unlink them. Returns the removed names."""
    names = [n for n in names if n.startswith(PREFIX)]
    pids = ns.pids_in(names)
    if pids:
        kill_pids(sorted(pids))
    removed = []
    with deferred_signals():
        for n in names:
            if ns.remove(n):
                removed.append(n)
    return removed


def _root_links() -> list[str]:
    """Links carrying PREFIX in the root namespace (the lab creates none; belt and braces)."""
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def _remove_root_links(names: list[str]) -> list[str]:
    if not names:
        return []
    from pyroute2 import IPRoute

    removed = []
    with IPRoute() as ipr:
        for n in names:
            if not n.startswith(PREFIX):
                continue
            idx = ipr.link_lookup(ifname=n)
            if idx:
                ipr.link("del", index=idx[0])
                removed.append(n)
    return removed


def require_root(what: str) -> None:
    """Network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN (not merely uid 0)."""
    privileges.require(what, privileges.CAP_SYS_ADMIN, privileges.CAP_NET_ADMIN)


@dataclass
class CleanReport:
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # namespaces of live or `topo up` labs


def clean(everything: bool = False, labs: list[str] | None = None) -> CleanReport:
    """Remove what crashed labs left behind (or, with everything=True, every lab namespace);
    with `labs`, only the namespaces and state files of those lab ids.

    Never touches a name without PREFIX; kills only processes inside the removed namespaces.
    """
    require_root("mptcplab clean")
    report = CleanReport()
    # Namespaces first, then states: a lab writes its state before its first namespace, so a
    # lab starting between the two reads is seen with its state and kept.
    present = lab_namespaces()
    states = {s.id: s for s in all_states()}
    if labs is not None:
        unknown = [i for i in labs if i not in states and
                   not any((p := parse_ns_name(n)) and p[0] == i for n in present)]
        if unknown:
            raise BadInput(f"no lab {', '.join(unknown)} (see `mptcplab topo list`)")
    keep_ids = set() if everything else {
        i for i, s in states.items() if s.detached or s.owner_alive}
    doomed = []
    for name in present:
        parsed = parse_ns_name(name)
        if labs is not None and (parsed is None or parsed[0] not in labs):
            continue
        if parsed and parsed[0] in keep_ids:
            report.kept.append(name)
        else:
            doomed.append(name)
    report.namespaces = remove_namespaces(doomed)
    if labs is None:
        report.links = _remove_root_links(_root_links())
    for lab_id, st in states.items():
        if lab_id not in keep_ids and (labs is None or lab_id in labs):
            st.delete()
            report.states.append(lab_id)
    return report


def _labs_text(states: list[LabState]) -> str:
    return ", ".join(f"{s.id} ({s.topology}{', by ' + s.owner if s.owner else ''})"
                     for s in states)


def down(target: str | None = None, *, everything: bool = False) -> list[LabState]:
    """Tear down labs brought up with `topo up`: by lab id, by topology name when exactly one
    lab of that topology is up, the only one, or (everything=True) all of them. Never more
    than one lab unless asked for all: on a shared machine the others may be someone else's."""
    require_root("mptcplab topo down")
    detached = [s for s in all_states() if s.detached]
    if everything:
        chosen = detached
    elif target is None:
        if len(detached) > 1:
            raise BadInput(f"several labs are up ({_labs_text(detached)}): name one by its "
                           "id, or use --all")
        chosen = detached
    else:
        chosen = [s for s in detached if s.id == target]
        if not chosen:
            chosen = [s for s in detached if s.topology == target]
            if len(chosen) > 1:
                raise BadInput(f"{len(chosen)} labs of {target} are up ({_labs_text(chosen)}):"
                               " name one by its id (labs are not only yours on a shared "
                               "machine)")
        if not chosen:
            raise BadInput(f"no lab {target!r} is up (see `mptcplab topo list`)")
    if not chosen:
        raise LabError("no lab is up")
    for st in chosen:
        names = sorted(set(st.namespaces) | {n for n in lab_namespaces()
                                             if (p := parse_ns_name(n)) and p[0] == st.id})
        remove_namespaces(names)
        st.delete()
    return chosen


def resolve_node(spec: str) -> str:
    """The namespace a user means by `-n SPEC`: an existing namespace name, `LAB:NODE`, or
    `NODE` when exactly one running lab has a node of that name."""
    if os.path.exists(os.path.join(ns.NETNS_DIR, spec)) and "/" not in spec:
        return spec
    if "/" in spec:                                   # a path such as /proc/PID/ns/net
        if os.path.exists(spec):
            return spec
        raise BadInput(f"no network namespace {spec}")
    states = [s for s in all_states() if s.running]
    lab, sep, node = spec.rpartition(":")
    if sep:
        st = next((s for s in states if s.id == lab), None)
        if st is None:
            up = ", ".join(s.id for s in states) or "none"
            raise BadInput(f"no running lab {lab!r} (running: {up}; see `mptcplab topo list`)")
        name = st.node_netns(node)
        if name is None:
            raise BadInput(f"lab {lab} ({st.topology}) has no node {node!r} "
                           f"(nodes: {', '.join(st.nodes)})")
        return name
    having = [s for s in states if s.node_netns(spec)]
    if len(having) == 1:
        return having[0].node_netns(spec)  # type: ignore[return-value]
    if len(having) > 1:
        raise BadInput(f"{len(having)} running labs have a node {spec!r} "
                       f"({_labs_text(having)}): say which, as LAB:{spec}")
    raise BadInput(f"no network namespace {spec!r} and no running lab has a node of that "
                   "name (see `ip netns list` and `mptcplab topo list`)")
