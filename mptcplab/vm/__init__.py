"""Other kernels for the lab: boot one in a VM (virtme-ng) and run any command there, and run
the conformance cases on several kernels into a kernel x case matrix.

    kernels   resolve("6.12" | "host" | PATH) -> Kernel; Debian packages fetched into the cache
    machine   run(kernel, argv, cwd=...) -> VMRun; KVM when it works, TCG otherwise
    matrix    run_cases(kernels, ...) -> per-kernel results (JUnit XML + JSON); merge(files)

Rendering of the matrix is in mptcplab/report/matrix.py; the commands are `mptcplab vm` and
`mptcplab cases`. docs/vm.md has the whole story.
"""

from mptcplab.vm.kernels import HOST, Kernel, cache_root, cached, debian_offers, resolve
from mptcplab.vm.machine import VMOptions, VMRun, run

__all__ = ["HOST", "Kernel", "VMOptions", "VMRun", "cache_root", "cached", "debian_offers",
           "resolve", "run"]
