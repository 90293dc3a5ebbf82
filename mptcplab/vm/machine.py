"""Boot a kernel in a VM with virtme-ng and run one command in it, as if on this machine.

The guest shares this machine's root filesystem (read-only, with throwaway overlays on /etc,
/usr, /var, /tmp, ...), so the installed lab, Python, tcpdump and nft are there; the command's
working directory (the checkout) is shared writable for its results. The command runs as root
with this process's environment (PATH, PYTHONPATH, MPTCPLAB_*), its output is streamed back,
and its exit status is ours.

Nothing is left behind: the VM runs in a process group of its own, stopped (SIGTERM, then
SIGKILL) on return, on an exception, on Ctrl-C and on SIGTERM/SIGHUP; the small directory that
carries the command in and its status out is removed.

KVM is used only when it works: tried once per process by booting the kernel for an instant
with `-accel kvm`; where /dev/kvm exists but guests die (no VMX exposed to this machine), it
falls back to TCG emulation and says so.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mptcplab.errors import ExitStatus, LabError, MissingTool, NotRoot
from mptcplab.topo import lifecycle
from mptcplab.vm.kernels import Kernel

QEMU = "qemu-system-x86_64"
UDEVD = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
# Not passed into the guest: they describe this login session, not the machine.
ENV_SKIP = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
            "SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY",
            "TMUX", "TMUX_PANE", "STY", "PWD", "OLDPWD", "SHLVL", "_", "TERM_SESSION_ID")
# Never shared writable: the guest runs as root. The machine's own trees and anything in them;
# "/", "/home" and "/root" themselves only (a checkout under /home/you or /root is fine).
SYSTEM_TREES = tuple(Path(p) for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64",
                                       "/proc", "/run", "/sbin", "/sys", "/usr", "/var"))
SYSTEM_DIRS = {Path("/"), Path("/home"), Path("/root")}


def system_dir(path: Path) -> bool:
    """Is `path` (resolved) one of this machine's own directories, or inside one?"""
    return path in SYSTEM_DIRS or any(path == t or t in path.parents for t in SYSTEM_TREES)
KVM_PROBE_SECONDS = 3.0
STOP_GRACE = 5.0

Log = Callable[[str], None]


def _stderr_log(text: str) -> None:
    print(f"mptcplab: {text}", file=sys.stderr, flush=True)


@dataclass
class VMOptions:
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"                          # auto | kvm | tcg
    rwdirs: list[Path] = field(default_factory=list)
    timeout: float | None = None                 # seconds for boot + command
    verbose: bool = False                        # the guest's console (boot messages) on stderr
    # TCG is a CPU hog: below whatever else runs here (native cases, other people's timers),
    # at no cost on an idle machine.
    nice: int = 10


@dataclass
class VMRun:
    returncode: int
    accel: str
    release: str
    seconds: float          # from starting the VM to its end
    boot_seconds: float     # until the command started
    command_seconds: float  # the command itself (the rest is booting and powering off)
    stderr_tail: list[str] = field(default_factory=list)


# -- what the machine needs ------------------------------------------------------------------

def check_tools() -> None:
    """One-line errors naming the package for each thing virtme-ng needs that is missing."""
    if os.geteuid() != 0:
        raise NotRoot("running a VM for the lab needs root (the guest runs the lab as root "
                      "on a read-only share of this machine)")
    need = [("vng", "virtme-ng from PyPI (pip install virtme-ng)"),
            (QEMU, "the Debian package qemu-system-x86"),
            ("busybox", "the Debian package busybox-static"),
            ("depmod", "the Debian package kmod")]
    for tool, what in need:
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool} not found: install {what} (tools/setup.sh does)")
    if not any(os.path.exists(p) for p in UDEVD):
        # without udev the guest has no /dev/virtio-ports/*: no stdout, no exit status
        raise MissingTool("systemd-udevd not found: install the Debian package udev (the guest "
                          "needs it to reach the command's output; tools/setup.sh does)")


_kvm_verdict: tuple[bool, str] | None = None


def kvm_usable(image: Path) -> tuple[bool, str]:
    """(usable, why): boot `image` under KVM for an instant. A machine whose CPU exposes no
    VMX still has /dev/kvm, but qemu dies setting up the guest CPU; that is what this sees."""
    global _kvm_verdict
    if _kvm_verdict is not None:
        return _kvm_verdict
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        _kvm_verdict = (False, "no usable /dev/kvm")
        return _kvm_verdict
    cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "microvm", "-nodefaults",
           "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot",
           "-m", "128", "-kernel", str(image), "-append", "panic=-1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=KVM_PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        _stop_group(proc, grace=1.0)
        _kvm_verdict = (True, "KVM")          # still running: the guest is booting
        return _kvm_verdict
    if proc.returncode == 0:
        _kvm_verdict = (True, "KVM")
    else:
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        why = lines[0].removeprefix(f"{QEMU}: ") if lines else f"qemu exit {proc.returncode}"
        _kvm_verdict = (False, f"KVM guests die here ({why})")
    return _kvm_verdict


def choose_accel(requested: str, image: Path) -> tuple[str, str]:
    """("kvm" | "tcg", a phrase saying why) for `--accel auto|kvm|tcg`."""
    if requested == "tcg":
        return "tcg", "TCG emulation, as asked"
    ok, why = kvm_usable(image)
    if requested == "kvm":
        if not ok:
            raise MissingTool(f"--accel kvm: {why}; use --accel tcg (emulation, ~6x slower)")
        return "kvm", "KVM"
    return ("kvm", "KVM") if ok else ("tcg", f"TCG emulation: {why}")


# -- running ---------------------------------------------------------------------------------

def guest_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the command gets in the guest: ours, less this login session's."""
    src = dict(os.environ if env is None else env)
    return {k: v for k, v in src.items() if k not in ENV_SKIP and k.isidentifier()}


def _script(share: Path, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    q = shlex.quote
    lines = ["# written by `mptcplab vm run`; runs as root inside the guest",
             # The one module the lab wants that the kernel might not load on demand (link
             # delay/jitter); loaded here only, in a throwaway VM, never on the host.
             "[ -d /lib/modules/$(uname -r) ] && modprobe -q sch_netem 2>/dev/null",
             f"uname -r > {q(str(share / 'booted'))}"]
    lines += [f"export {k}={q(v)}" for k, v in sorted(env.items())]
    lines += [f"cd {q(str(cwd))} || {{ echo 127 > {q(str(share / 'status'))}; exit 127; }}",
              " ".join(q(a) for a in argv),
              "rc=$?",
              f"echo $rc > {q(str(share / 'status'))}",
              "exit $rc"]
    return "\n".join(lines) + "\n"


def _pump(src: BinaryIO, dst: BinaryIO | None, tail: collections.deque[str] | None) -> None:
    fd = src.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        if dst is not None:
            try:
                dst.write(chunk)
                dst.flush()
            except (BrokenPipeError, ValueError):
                dst = None
        if tail is not None:
            tail.extend(chunk.decode(errors="replace").splitlines())


def _stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """Stop the VM: SIGTERM to its process group (vng, virtme-run, qemu), SIGKILL after
    `grace` seconds. Only this one group, which this process started."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


def stop_running() -> None:
    """Stop every VM this process started that is still running (from any thread), and
    refuse to start more until `allow_running()`."""
    with _running_lock:
        _stopping.set()
        procs = list(_running)
    for proc in procs:
        _stop_group(proc)


def allow_running() -> None:
    _stopping.clear()


def stopping() -> bool:
    return _stopping.is_set()


def vng_command(kernel: Kernel, share: Path, cwd: Path, accel: str,
                options: VMOptions) -> list[str]:
    assert kernel.image is not None
    cmd = ["nice", "-n", str(options.nice)] if options.nice else []
    cmd += ["vng", "--run", str(kernel.image), "--user", "root", "--name", "mptcplab",
           "--memory", options.memory, "--cpus", str(options.cpus), "--cwd", str(cwd),
           "--rwdir", str(share)]
    for d in dict.fromkeys(options.rwdirs):
        cmd += ["--rwdir", str(d)]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    if options.verbose:
        cmd.append("--verbose")
    cmd += ["--exec", f"/bin/sh {shlex.quote(str(share / 'run.sh'))}"]
    return cmd


def check_writable(cwd: Path, rwdirs: Sequence[Path]) -> None:
    """The directories the guest (root) may write: the working directory and --rwdir ones,
    never this machine's own (checked before anything is fetched or booted)."""
    if not cwd.is_dir():
        raise LabError(f"working directory {cwd} does not exist")
    for d in (cwd, *rwdirs):
        if system_dir(Path(d).resolve()):
            raise LabError(f"refusing to let the guest write {d} (this machine's own files): "
                           "run from your checkout, or give --rwdir a directory of yours",
                           ExitStatus.USAGE)


def run(kernel: Kernel, argv: Sequence[str], *, cwd: Path, options: VMOptions | None = None,
        env: dict[str, str] | None = None, stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None, log: Log = _stderr_log) -> VMRun:
    """Boot `kernel`, run `argv` in `cwd` (shared writable, with options.rwdirs), stream its
    output to `stdout`/`stderr` (default: ours), stop the VM. Raises LabError when the kernel
    does not boot to the command or the VM dies under it; the command's own failure is a
    returncode."""
    if kernel.image is None:
        raise LabError("the host kernel runs natively; give a kernel image or a Debian "
                       "version to boot in a VM")
    if not argv:
        raise LabError("no command to run in the VM")
    options = options or VMOptions()
    cwd = cwd.resolve()
    check_writable(cwd, options.rwdirs)
    check_tools()
    accel, why = choose_accel(options.accel, kernel.image)
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    share = Path(tempfile.mkdtemp(prefix=f"mptcplab-vm-{os.getpid()}-"))   # whose, for clean-up checks
    tail: collections.deque[str] = collections.deque(maxlen=20)
    proc: subprocess.Popen | None = None
    started, started_wall = time.monotonic(), time.time()
    pumps: list[threading.Thread] = []
    lifecycle.hold_termination()
    try:
        (share / "run.sh").write_text(_script(share, argv, cwd, guest_env(env)))
        options = VMOptions(**{**options.__dict__, "rwdirs": [cwd, *options.rwdirs]})
        log(f"booting {kernel.release} ({kernel.source}) under {why}; "
            f"{options.cpus} CPUs, {options.memory}")
        proc = subprocess.Popen(vng_command(kernel, share, cwd, accel, options),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        with _running_lock:
            _running.add(proc)
            if _stopping.is_set():
                raise LabError("stopped: the run was interrupted")
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, out, None), daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, err, tail), daemon=True)]
        for t in pumps:
            t.start()
        try:
            proc.wait(timeout=options.timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise LabError(f"the VM on {kernel.release} ran out of its {options.timeout:g} s "
                           "and was stopped") from None
        for t in pumps:
            t.join(timeout=5)
        if _stopping.is_set():
            raise LabError(f"the VM on {kernel.release} was stopped: the run was interrupted")
        seconds = time.monotonic() - started
        booted, status = share / "booted", share / "status"
        if not booted.exists():
            last = next((ln for ln in reversed(tail) if ln.strip()), "")
            raise LabError(f"{kernel.release} did not boot to the command (vng exit "
                           f"{proc.returncode}{': ' + last.strip() if last else ''}); "
                           "--verbose shows its console")
        boot = booted.stat().st_mtime - started_wall
        if not status.exists():
            raise LabError(f"the VM on {kernel.release} stopped before the command ended "
                           f"(vng exit {proc.returncode}: a kernel panic or out of memory?); "
                           "--verbose shows its console")
        text = status.read_text().strip()
        command = status.stat().st_mtime - booted.stat().st_mtime
        return VMRun(int(text) if text.isdigit() else 1, accel, booted.read_text().strip(),
                     seconds, max(0.0, boot), max(0.0, command), list(tail))
    finally:
        if proc is not None:
            _stop_group(proc)
            with _running_lock:
                _running.discard(proc)
            for t in pumps:
                t.join(timeout=2)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        shutil.rmtree(share, ignore_errors=True)
        lifecycle.release_termination()
