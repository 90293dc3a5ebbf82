"""The demo catalogue: one Python file per demo, found the way topologies are.

A demo file has a module docstring (its first line says what the demo shows, the rest is what
a teacher would say before running it) and ``run(scene, **options)``; optional module names:
``TOPOLOGY`` (the catalogue topology it builds), ``NEEDS`` (tools on PATH and sysctls it
probes before anything is built), ``SECONDS`` (its usual wall time here), ``ORDER`` (its place
in the list). A tour has ``SEQUENCE`` (demo names) instead of ``run``. The name is the file
name with ``_`` as ``-`` (add_addr.py -> "add-addr"). Searched: $MPTCPLAB_DEMOS
(os.pathsep-separated directories), then this package; files starting with "_" are machinery.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from mptcplab.plugins import CatalogueEntry, FileCatalogue

ENV = "MPTCPLAB_DEMOS"
PACKAGE_DIR = Path(__file__).resolve().parent


def _valid(module: ModuleType) -> str | None:
    if callable(getattr(module, "run", None)) or getattr(module, "SEQUENCE", None):
        return None
    return "defines neither run() nor SEQUENCE"


FILES = FileCatalogue("demo", ENV, PACKAGE_DIR, valid=_valid, package="mptcplab.demo")


def search_path() -> list[Path]:
    return FILES.search_path()


class Entry(CatalogueEntry):
    """A demo file: what it shows, what it needs, its run() options."""

    catalogue = FILES
    entry_point = "run"

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0].strip() if self.doc else ""

    @property
    def story(self) -> list[str]:
        """The docstring after its first line: what a teacher says before the run."""
        return self.doc.splitlines()[1:]

    @property
    def sequence(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "SEQUENCE", ()))

    @property
    def topology(self) -> str:
        return getattr(self.module, "TOPOLOGY", "")

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "NEEDS", ()))

    @property
    def seconds(self) -> float | None:
        return getattr(self.module, "SECONDS", None)

    @property
    def order(self) -> int:
        return int(getattr(self.module, "ORDER", 100))


def entries() -> dict[str, Entry]:
    """name -> Entry for every demo (earlier directories win), in their ORDER."""
    found = {name: Entry(name, path) for name, path in FILES.files().items()}
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def names() -> list[str]:
    return list(entries())


def entry(name: str) -> Entry:
    return Entry(*FILES.find(name))
