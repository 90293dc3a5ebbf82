"""What several command groups share: argument types, `-n NETNS|LAB:NODE`, `--json`."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A packet count for -c: a whole number, 0 meaning no limit."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_netns(p: argparse.ArgumentParser, what: str = "run") -> None:
    """`-n NETNS`: a namespace name, a lab node as LAB:NODE, or NODE when one lab has it."""
    p.add_argument("-n", "--netns", metavar="NETNS|LAB:NODE",
                   help=f"{what} inside this network namespace: a name from `ip netns list`, "
                        "a lab node as LAB:NODE, or just NODE when one running lab has it")


def netns_of(spec: str | None) -> str | None:
    """The namespace name `-n` designates (None: this process's own namespace)."""
    if spec is None:
        return None
    from mptcplab.topo.lifecycle import resolve_node

    return resolve_node(spec)


def add_json(p: argparse.ArgumentParser, what: str = "print as JSON") -> None:
    p.add_argument("--json", action="store_true", help=what)


def in_host_namespace() -> bool:
    """Is this process in the machine's own network namespace (init's)? Inside a lab node
    (`mptcplab exec`, `ip netns exec`) it is not. Commands that would change a namespace's
    MPTCP settings (the path-manager daemon, `nc --policy`) ask for --host there."""
    import os

    try:
        here, init = os.stat("/proc/self/ns/net"), os.stat("/proc/1/ns/net")
    except OSError:
        return True
    return (here.st_dev, here.st_ino) == (init.st_dev, init.st_ino)
