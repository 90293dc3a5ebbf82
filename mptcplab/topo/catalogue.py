"""The topology catalogue: named topologies, one Python file each, found on a search path.

A catalogue file has a module docstring (an ASCII diagram first) and a `build(**options)`
returning a Topology; its name is the file name with `_` as `-` (two_paths.py -> "two-paths").
The search path is $MPTCPLAB_NETNS (os.pathsep-separated directories), then the repository's
`netns/` beside the package (a checkout or `pip install -e .`). `get()` also takes a path to
a .py file, so a topology of your own needs no registration.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mptcplab.errors import BadInput, LabError
from mptcplab.plugins import FileCatalogue
from mptcplab.topo.model import Topology

ENV = "MPTCPLAB_NETNS"
REPO_NETNS = Path(__file__).resolve().parent.parent.parent / "netns"


def _valid(module: ModuleType) -> str | None:
    return None if callable(getattr(module, "build", None)) else "defines no build() function"


FILES = FileCatalogue("topology", ENV, REPO_NETNS, valid=_valid)


def search_path() -> list[Path]:
    return FILES.search_path()


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path

    @property
    def module(self) -> ModuleType:
        return FILES.load(self.path)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.module.__doc__ or "")

    @property
    def summary(self) -> str:
        """The first docstring line that is not part of the diagram."""
        for line in self.doc.splitlines():
            if line.strip() and line[:1].isalpha():
                return line.strip()
        return ""

    @property
    def options(self) -> dict[str, Any]:
        sig = inspect.signature(self.module.build)
        return {k: p.default for k, p in sig.parameters.items()
                if p.default is not inspect.Parameter.empty}

    def settable(self) -> dict[str, str]:
        """Options `--set NAME=VALUE` can give, with the kind of value each takes."""
        sig = inspect.signature(self.module.build)
        out = {}
        for name, param in sig.parameters.items():
            if param.default is inspect.Parameter.empty:
                continue
            kind = _option_kind(param)
            if kind is not None:
                out[name] = kind
        return out

    def parse_options(self, pairs: list[str]) -> dict[str, Any]:
        """`NAME=VALUE` words as build() keyword arguments, typed after each option's default
        and annotation: booleans as people write them (true/false, yes/no, on/off, 1/0),
        numbers as numbers (`loss=True` is no percentage), `none` for an optional value.
        An unknown name is an error listing the valid ones."""
        kinds = self.settable()
        out: dict[str, Any] = {}
        for pair in pairs:
            name, sep, raw = pair.partition("=")
            name = name.strip()
            if not sep or not name.isidentifier():
                raise BadInput(f"--set wants NAME=VALUE, got {pair!r}")
            if name not in kinds:
                valid = ", ".join(f"{k} ({v})" for k, v in kinds.items()) or "none"
                raise BadInput(f"{self.name} has no option {name!r} (options: {valid})")
            out[name] = _parse_value(name, raw.strip(), kinds[name])
        return out

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


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _option_kind(param: inspect.Parameter) -> str | None:
    """'bool', 'int', 'float', 'str' (each maybe '... or none'), or None for what a command
    line cannot give (a list of middleboxes: use --middlebox)."""
    ann, default = param.annotation, param.default
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)
    text = text.replace("typing.", "")
    optional = default is None or "None" in text
    for kind in ("bool", "int", "float", "str"):
        if default is not None and type(default).__name__ == kind or \
                default is None and kind in [t.strip() for t in text.split("|")]:
            return kind + (" or none" if optional else "")
    if default is None and text in ("", "_empty", "<class 'inspect._empty'>"):
        return "str or none"
    return None


def _parse_value(name: str, raw: str, kind: str) -> Any:
    base = kind.split()[0]
    if kind.endswith("or none") and raw.lower() in ("none", ""):
        return None
    low = raw.lower()
    if base == "bool":
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise BadInput(f"{name}={raw}: say true or false (yes/no, on/off, 1/0)")
    if base in ("int", "float"):
        try:
            return int(raw) if base == "int" else float(raw)
        except ValueError:
            what = "a whole number" if base == "int" else "a number"
            raise BadInput(f"{name}={raw}: {name} takes {what}") from None
    return raw


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
