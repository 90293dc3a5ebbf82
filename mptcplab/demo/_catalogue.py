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

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mptcplab.errors import BadInput, LabError

ENV = "MPTCPLAB_DEMOS"
PACKAGE_DIR = Path(__file__).resolve().parent


def search_path() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get(ENV, "").split(os.pathsep) if d]
    dirs.append(PACKAGE_DIR)
    return [d for d in dirs if d.is_dir()]


_modules: dict[Path, ModuleType] = {}


def _load(path: Path) -> ModuleType:
    path = path.resolve()
    if path not in _modules:
        if path.parent == PACKAGE_DIR:
            module = importlib.import_module(f"mptcplab.demo.{path.stem}")
        else:
            modname = f"mptcplab_demo_{path.stem}_{abs(hash(path)) & 0xFFFFFF:x}"
            spec = importlib.util.spec_from_file_location(modname, path)
            if spec is None or spec.loader is None:
                raise BadInput(f"cannot load demo file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[modname]
                raise LabError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if not callable(getattr(module, "run", None)) and not getattr(module, "SEQUENCE", None):
            raise BadInput(f"{path} defines neither run() nor SEQUENCE")
        _modules[path] = module
    return _modules[path]


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path

    @property
    def module(self) -> ModuleType:
        return _load(self.path)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.module.__doc__ or "")

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

    @property
    def options(self) -> dict[str, Any]:
        if self.sequence:
            return {}
        sig = inspect.signature(self.module.run)
        return {k: p.default for k, p in sig.parameters.items()
                if p.default is not inspect.Parameter.empty}


def entries() -> dict[str, Entry]:
    """name -> Entry for every demo (earlier directories win), in their ORDER."""
    found: dict[str, Entry] = {}
    for d in search_path():
        for f in sorted(d.glob("*.py")):
            if f.name.startswith("_"):
                continue
            name = f.stem.replace("_", "-")
            found.setdefault(name, Entry(name, f))
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def names() -> list[str]:
    return list(entries())


def entry(name: str) -> Entry:
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise BadInput(f"no demo file {name}")
        return Entry(path.stem.replace("_", "-"), path)
    found = entries()
    if name not in found:
        close = [n for n in found if n.startswith(name[:3])]
        hint = f"; did you mean {close[0]}?" if close else ""
        raise BadInput(f"unknown demo {name!r} (known: {', '.join(found)}){hint}")
    return found[name]
