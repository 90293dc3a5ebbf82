"""`mptcplab vm run|fetch|list`: other kernels in VMs (virtme-ng)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mptcplab.cli.common import positive, seconds
from mptcplab.errors import ExitStatus, LabError


def memory(text: str) -> str:
    """qemu's -m: a number with an optional K/M/G/T suffix."""
    import re

    if not re.fullmatch(r"\d+[KMGTkmgt]?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size such as 2G or 1536M")
    return text


def add_vm_options(p: argparse.ArgumentParser) -> None:
    """What shapes the VM: shared by `vm run` and `cases`."""
    g = p.add_argument_group("the VM")
    g.add_argument("--memory", type=memory, default="2G", help="guest memory (default 2G)")
    g.add_argument("--cpus", type=positive, default=2, help="guest CPUs (default 2)")
    g.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto (default): KVM if a guest really runs under it here, else TCG "
                        "emulation; kvm or tcg to insist")
    g.add_argument("--rwdir", action="append", type=Path, default=[], metavar="DIR",
                   help="another directory the guest may write (the working directory always "
                        "is); repeatable")
    g.add_argument("--verbose", action="store_true",
                   help="show the guest's console (boot messages) on stderr")


def vm_options(args: argparse.Namespace):
    from mptcplab.vm import VMOptions

    for d in args.rwdir:
        if not d.is_dir():
            raise LabError(f"--rwdir {d}: no such directory", ExitStatus.BAD_INPUT)
    return VMOptions(memory=args.memory, cpus=args.cpus, accel=args.accel,
                     rwdirs=[d.resolve() for d in args.rwdir], verbose=args.verbose,
                     timeout=getattr(args, "timeout", None))


def _say(text: str) -> None:
    import sys

    print(f"mptcplab: {text}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from mptcplab.vm import machine, resolve

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise LabError("give the command to run after --: mptcplab vm run --kernel 6.12 -- "
                       "python3 -m pytest cases -k join", ExitStatus.USAGE)
    options = vm_options(args)
    machine.check_writable(Path(os.getcwd()), options.rwdirs)
    machine.check_tools()
    kernel = resolve(args.kernel, log=_say)
    if kernel.native:
        raise LabError("--kernel host is the kernel this runs on; to run a command on it, "
                       "just run it (or give /boot/vmlinuz-... to boot it in a VM)",
                       ExitStatus.USAGE)
    result = machine.run(kernel, command, cwd=Path(os.getcwd()), options=options,
                         log=_say)
    if args.report:
        _say(f"{kernel.release} under {result.accel.upper()}: booted in "
             f"{result.boot_seconds:.1f} s, the command took {result.command_seconds:.1f} s, "
             f"{result.seconds:.1f} s in all; command exit {result.returncode}")
    return result.returncode


def _fetch(args: argparse.Namespace) -> int:
    from mptcplab.vm import resolve

    out = []
    for spec in args.kernel:
        k = resolve(spec, log=_say)
        out.append(k.as_dict())
        if not args.json:
            print(f"{spec}: {k.release} in {k.image} ({k.source})")
    if args.json:
        print(json.dumps(out))
    return ExitStatus.OK


def _list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mptcplab.vm import cache_root, cached, debian_offers

    have = cached()
    offers = {}
    for series in args.series or ["6.1", "6.12"]:
        try:
            offers[series] = [d.__dict__ | {"release": d.release} for d in debian_offers(series)]
        except LabError:
            offers[series] = []
    if args.json:
        print(json.dumps({"cache": str(cache_root() / "kernels"),
                          "cached": [k.as_dict() for k in have], "offered": offers}))
        return ExitStatus.OK
    print(f"kernels in {cache_root() / 'kernels'}:")
    print(tabulate([[k.release, k.source, str(k.image)] for k in have],
                   headers=["release", "source", "image"]) if have else "  (none)")
    print()
    for series, debs in offers.items():
        newest = f"{debs[0]['package']} {debs[0]['version']}" if debs else \
            "none in the configured apt sources"
        print(f"--kernel {series}: {newest}")
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vm", help="run the lab on another kernel, in a VM (virtme-ng)",
                       description="Boot another kernel in a VM that shares this machine's "
                                   "filesystem (virtme-ng) and run lab commands there. KERNEL "
                                   "is a kernel image (a bzImage just built, /boot/vmlinuz-...) "
                                   "or a Debian kernel version (6.1, 6.12) fetched with apt "
                                   "into the lab's cache. See docs/vm.md.")
    vsub = p.add_subparsers(dest="vm_command", metavar="ACTION", required=True)

    r = vsub.add_parser(
        "run", help="run a command inside a VM on KERNEL",
        usage="%(prog)s --kernel KERNEL [options] -- COMMAND [ARG ...]",
        description="Boot KERNEL in a VM and run COMMAND there as root, in the current "
                    "directory (shared writable; the rest of the filesystem read-only with "
                    "throwaway overlays), with this environment. Its output comes back here "
                    "and its exit status is this command's. The VM is stopped on exit, "
                    "on error and on Ctrl-C.",
        epilog="Example: mptcplab vm run --kernel 6.12 -- python3 -m pytest cases -k join. "
               "Exit codes: the command's own, or 1 the kernel did not boot / the VM died, "
               "3 not a kernel image, 4 not root, 5 virtme-ng, qemu or a package missing, "
               "130 interrupted.")
    r.add_argument("--kernel", required=True, metavar="KERNEL",
                   help="a kernel image path, or a Debian version: 6.1, 6.12, 6.12.117+deb12")
    add_vm_options(r)
    r.add_argument("--timeout", type=seconds, metavar="SECONDS",
                   help="stop the VM after this long (boot included)")
    r.add_argument("--report", action="store_true",
                   help="say at the end how long the boot and the whole run took")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command and its arguments")
    r.set_defaults(func=_run)

    f = vsub.add_parser("fetch", help="fetch Debian kernels into the lab's cache",
                        description="Download linux-image-<version>-amd64 with apt-get and "
                                    "unpack it with its modules into the lab's cache "
                                    "($MPTCPLAB_CACHE, else ~/.cache/mptcplab/kernels); "
                                    "nothing is installed into /boot.")
    f.add_argument("kernel", nargs="+", metavar="KERNEL", help="6.1, 6.12, 6.12.117+deb12, ...")
    f.add_argument("--json", action="store_true", help="print what was fetched as JSON")
    f.set_defaults(func=_fetch)

    ls = vsub.add_parser("list", help="kernels in the cache and what apt offers",
                         description="The kernels in the lab's cache, and the newest Debian "
                                     "kernel the configured apt sources offer for each series.")
    ls.add_argument("--series", action="append", default=None, metavar="VERSION",
                    help="the series to look up (default 6.1 and 6.12)")
    ls.add_argument("--json", action="store_true", help="print as JSON")
    ls.set_defaults(func=_list)
