"""The topology catalogue: named topologies, one Python file each, found on a search path.

A catalogue file has a module docstring (an ASCII diagram first) and a `build(**options)`
returning a Topology; its name is the file name with `_` as `-` (two_paths.py -> "two-paths").
The search path is $MPTCPLAB_NETNS (os.pathsep-separated directories), then the repository's
`netns/` beside the package (a checkout or `pip install -e .`). `get()` also takes a path to
a .py file, so a topology of your own needs no registration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from mptcplab.errors import BadInput, LabError
from mptcplab.plugins import CatalogueEntry, FileCatalogue
from mptcplab.topo.model import Topology

ENV = "MPTCPLAB_NETNS"
REPO_NETNS = Path(__file__).resolve().parent.parent.parent / "netns"


def _valid(module: ModuleType) -> str | None:
    return None if callable(getattr(module, "build", None)) else "defines no build() function"


FILES = FileCatalogue("topology", ENV, REPO_NETNS, valid=_valid)


def search_path() -> list[Path]:
    return FILES.search_path()


class Entry(CatalogueEntry):
    """A topology file: its docstring, its build() options, and build()."""

    catalogue = FILES
    entry_point = "build"

    @property
    def summary(self) -> str:
        """The first docstring line that is not part of the diagram."""
        for line in self.doc.splitlines():
            if line.strip() and line[:1].isalpha():
                return line.strip()
        return ""

    def build(self, **options: Any) -> Topology:
        fn: Callable[..., Topology] = self.module.build
        try:
            topo = fn(**options)
        except LabError:
            raise
        except Exception as exc:   # a bad option value, or a bug in the topology file
            raise BadInput(f"topology {self.name}: {type(exc).__name__}: {exc}") from None
        if not isinstance(topo, Topology):
            raise LabError(f"{self.path}: build() returned {type(topo).__name__}, not Topology")
        topo.name = self.name
        topo.doc = topo.doc or self.doc
        return topo


def entries() -> dict[str, Entry]:
    """name -> Entry for every catalogue file (earlier directories win)."""
    return {name: Entry(name, path) for name, path in FILES.files().items()}


def names() -> list[str]:
    return sorted(entries())


def entry(name: str) -> Entry:
    return Entry(*FILES.find(name))


def get(name: str, **options: Any) -> Topology:
    """Build the named topology (or the one in a .py file) with its options."""
    return entry(name).build(**options)
