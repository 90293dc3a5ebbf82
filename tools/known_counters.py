"""Write mptcplab/topo/mib_names.py: the MPTcpExt counters of the running kernel.

Run it on the newest kernel the lab supports (it reads /proc/net/netstat in a fresh namespace,
nothing else). The cases use the list to tell a counter an older kernel lacks ("not available
on this kernel") from a typo in a case (a failure).

    sudo python3 tools/known_counters.py
"""

from __future__ import annotations

import platform
import textwrap
from pathlib import Path

from mptcplab import namespaces
from mptcplab.topo.mib import read_here

OUT = Path(__file__).resolve().parent.parent / "mptcplab" / "topo" / "mib_names.py"


def main() -> None:
    def fresh() -> list[str]:
        namespaces.unshare_here()
        return sorted(n[len("MPTcpExt"):] for n in read_here() if n.startswith("MPTcpExt"))

    names = namespaces.in_thread(fresh)
    words = textwrap.wrap(" ".join(f'"{n}",' for n in names), 92, initial_indent="    ",
                          subsequent_indent="    ")
    release = platform.release()
    OUT.write_text(f'''"""The MPTcpExt counters of Linux {release} (its net/mptcp/mib.c), written by
tools/known_counters.py: a counter a case reads that is neither here nor in the running kernel
is a typo in the case, not a counter some older kernel lacks."""

MPTCP_COUNTERS = frozenset((
{chr(10).join(words)}
))
''')
    print(f"{OUT}: {len(names)} counters of {release}")


if __name__ == "__main__":
    main()
