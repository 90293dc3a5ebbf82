"""Named network namespaces without forking a helper per call.

pyroute2 forks a child for every namespace it creates and every socket it opens in one (~10 ms
each). Here a short-lived thread does the work instead: `unshare()` or `setns()` change only the
calling thread's namespace, so the thread creates the namespace, opens sockets or starts a process
there, and exits. The main thread never changes namespace, so nothing the lab does can land in the
root namespace by accident. Sockets and child processes keep the namespace they were created in.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar


T = TypeVar("T")

NETNS_DIR = "/run/netns"         # where iproute2 and pyroute2 look for named namespaces

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_rundir_lock = threading.Lock()
_rundir_ready = False


def _check(rc: int, what: str, path: str = "") -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)


def _prepare_rundir() -> None:
    """Make NETNS_DIR a shared mount, as `ip netns add` does, so namespaces show everywhere."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        os.makedirs(NETNS_DIR, exist_ok=True)
        d = NETNS_DIR.encode()
        if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "bind-mount", NETNS_DIR)
            _check(_libc.mount(b"none", d, None, MS_SHARED | MS_REC, None), "share", NETNS_DIR)
        _rundir_ready = True


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn in a fresh OS thread and return its result (or raise its exception)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed back to the caller below
            box["error"] = exc

    t = threading.Thread(target=body, name="mptcplab-ns", daemon=True)
    t.start()
    try:
        t.join()
    except BaseException:
        # Ctrl-C while the worker creates something: let it finish so the teardown sees it.
        t.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def _same_ns(fd: int) -> bool:
    here = os.stat("/proc/thread-self/ns/net")
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def enter(fd: int) -> None:
    """Move the *calling thread* into the namespace open at fd (only ever call in a worker)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")
    if not _same_ns(fd):  # never go on to write sysctls in the wrong namespace
        raise OSError(errno.EINVAL, "setns did not move the thread into the namespace")


def run(fd: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn(*args, **kwargs) in a thread inside the namespace open at fd."""

    def body() -> T:
        enter(fd)
        return fn(*args, **kwargs)

    return in_thread(body)


def create(name: str, then: Callable[[], T] | None = None) -> tuple[int, T | None]:
    """Create the named namespace; return an fd on it and what `then()` returned inside it.

    Raises FileExistsError if the name is taken (never reuses someone else's namespace).
    """
    _prepare_rundir()
    path = os.path.join(NETNS_DIR, name)

    def body() -> tuple[int, T | None]:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare", path)
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                   "bind-mount", path)
        except BaseException:
            os.unlink(path)
            raise
        fd = os.open(path, os.O_RDONLY)
        try:
            return fd, (then() if then is not None else None)
        except BaseException:
            os.close(fd)
            raise

    return in_thread(body)


def unshare_here() -> None:
    """Move the *calling thread* into a new, unnamed namespace (gone when the thread exits and
    nothing else holds it): for probes that must not touch any real namespace."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare")


def remove(name: str) -> bool:
    """Unmount and unlink a named namespace; True if it existed."""
    path = os.path.join(NETNS_DIR, name)
    _libc.umount2(path.encode(), MNT_DETACH)  # EINVAL when not mounted: unlink anyway
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(names: Iterable[str]) -> dict[int, str]:
    """pid -> namespace name for every process whose network namespace is one of `names`."""
    wanted = {ino: n for n in names if (ino := inode(n)) is not None}
    found: dict[int, str] = {}
    if not wanted:
        return found
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        name = wanted.get((st.st_dev, st.st_ino))
        if name is not None:
            found[int(entry)] = name
    return found


# -- helper processes tied to this one -------------------------------------------------------

PR_SET_PDEATHSIG = 1
_spawner: Any = None
_spawner_lock = threading.Lock()


def _spawn_thread() -> Any:
    """One long-lived thread that forks every tied helper. PR_SET_PDEATHSIG fires when the
    *thread* that forked the child ends, so helpers must not be forked by short-lived
    threads (ns.run's workers) or they would die at once."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            import queue

            jobs: queue.SimpleQueue[tuple[Callable[[], Any], dict[str, Any], threading.Event]] \
                = queue.SimpleQueue()

            def loop() -> None:
                while True:
                    fn, box, done = jobs.get()
                    try:
                        box["value"] = fn()
                    except BaseException as exc:   # handed back to the caller
                        box["error"] = exc
                    done.set()

            threading.Thread(target=loop, name="mptcplab-spawner", daemon=True).start()
            _spawner = jobs
    return _spawner


def popen_tied(argv: list[str], netns_fd: int | None = None, **popen_kwargs: Any) -> Any:
    """subprocess.Popen(argv) in the namespace open at `netns_fd` (None: this process's),
    in a session of its own (a Ctrl-C reaches only us, we stop it by PID), and killed by the
    kernel if this process dies, SIGKILL included (PR_SET_PDEATHSIG): a helper such as tcpdump
    never outlives the lab command that started it, nor holds a namespace alive after it."""
    import signal
    import subprocess

    parent = os.getpid()

    def in_child() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:          # the parent died before the prctl
            os._exit(126)
        if netns_fd is not None and _libc.setns(netns_fd, CLONE_NEWNET) != 0:
            os._exit(125)

    popen_kwargs.setdefault("start_new_session", True)
    box: dict[str, Any] = {}
    done = threading.Event()
    _spawn_thread().put((lambda: subprocess.Popen(argv, preexec_fn=in_child, **popen_kwargs),
                         box, done))
    done.wait()
    if "error" in box:
        raise box["error"]
    return box["value"]

