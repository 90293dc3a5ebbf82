"""Catalogues of Python files found on a search path: the topologies (`netns/`), the demos
(`mptcplab/demo/`), and any directory a user adds through an environment variable.

A file's name gives its catalogue name (`two_paths.py` -> "two-paths"); files starting with
"_" are machinery, not entries. Earlier directories win, so a user's file shadows a built-in
one of the same name. A path to a .py file works wherever a name does.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from mptcplab.errors import BadInput, LabError


class FileCatalogue:
    """`what` files ("topology", "demo") in $`env` directories, then `builtin` (a directory;
    `package` when its files are a package's modules). `valid(module)` says what a file must
    define, or None when it is fine."""

    def __init__(self, what: str, env: str, builtin: Path, *,
                 valid: Callable[[ModuleType], str | None], package: str | None = None) -> None:
        self.what, self.env, self.builtin, self.package = what, env, builtin, package
        self.valid = valid
        self._modules: dict[Path, ModuleType] = {}

    def search_path(self) -> list[Path]:
        dirs = [Path(d) for d in os.environ.get(self.env, "").split(os.pathsep) if d]
        dirs.append(self.builtin)
        return [d for d in dirs if d.is_dir()]

    def files(self) -> dict[str, Path]:
        """name -> file, earlier directories first."""
        found: dict[str, Path] = {}
        for d in self.search_path():
            for f in sorted(d.glob("*.py")):
                if not f.name.startswith("_"):
                    found.setdefault(f.stem.replace("_", "-"), f)
        return found

    def find(self, name: str) -> tuple[str, Path]:
        """(name, file) for a catalogue name or a path to a .py file; a one-line error naming
        what exists (and the closest name) otherwise."""
        if name.endswith(".py") or os.sep in name:
            path = Path(name)
            if not path.is_file():
                raise BadInput(f"no {self.what} file {name}")
            return path.stem.replace("_", "-"), path
        found = self.files()
        if name not in found:
            where = ", ".join(str(d) for d in self.search_path()) or f"nothing (set {self.env})"
            close = difflib.get_close_matches(name, list(found), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise BadInput(f"unknown {self.what} {name!r} (known: "
                           f"{', '.join(sorted(found)) or 'none'}; searched {where}){hint}")
        return name, found[name]

    def load(self, path: Path) -> ModuleType:
        """The file's module, imported once; a file that fails to import or lacks what a
        catalogue file must define is a one-line error."""
        path = path.resolve()
        if path not in self._modules:
            if self.package is not None and path.parent == self.builtin.resolve():
                module = importlib.import_module(f"{self.package}.{path.stem}")
            else:
                module = self._load_file(path)
            why = self.valid(module)
            if why is not None:
                raise BadInput(f"{path} {why}")
            self._modules[path] = module
        return self._modules[path]

    def _load_file(self, path: Path) -> ModuleType:
        modname = f"mptcplab_{self.what}_{path.stem}_{abs(hash(path)) & 0xFFFFFF:x}"
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise BadInput(f"cannot load {self.what} file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[modname]
            raise LabError(f"{path}: {type(exc).__name__}: {exc}") from exc
        return module


@dataclass(frozen=True)
class CatalogueEntry:
    """One file of a catalogue. Subclasses name their `catalogue` and the `entry_point`
    function whose keyword defaults are the entry's options."""

    name: str
    path: Path
    catalogue: ClassVar[FileCatalogue]
    entry_point: ClassVar[str]

    @property
    def module(self) -> ModuleType:
        return self.catalogue.load(self.path)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.module.__doc__ or "")

    def _parameters(self) -> list[inspect.Parameter]:
        fn = getattr(self.module, self.entry_point, None)
        if not callable(fn):
            return []
        return [p for p in inspect.signature(fn).parameters.values()
                if p.default is not inspect.Parameter.empty]

    @property
    def options(self) -> dict[str, Any]:
        """The entry point's keyword options and their defaults."""
        return {p.name: p.default for p in self._parameters()}

    def settable(self) -> dict[str, str]:
        """Options `--set NAME=VALUE` can give, with the kind of value each takes."""
        kinds = ((p.name, _option_kind(p)) for p in self._parameters())
        return {name: kind for name, kind in kinds if kind is not None}

    def parse_options(self, pairs: list[str]) -> dict[str, Any]:
        """`NAME=VALUE` words as keyword arguments, typed after each option's default and
        annotation: booleans as people write them (true/false, yes/no, on/off, 1/0), numbers
        as numbers (`loss=True` is no percentage), `none` for an optional value. An unknown
        name is an error listing the valid ones."""
        kinds = self.settable()
        out: dict[str, Any] = {}
        for pair in pairs:
            name, sep, raw = pair.partition("=")
            name = name.strip()
            if not sep or not name.isidentifier():
                raise BadInput(f"--set wants NAME=VALUE, got {pair!r}")
            self.check_names([name], kinds)
            out[name] = _parse_value(name, raw.strip(), kinds[name])
        return out

    def check_names(self, names: Any, kinds: dict[str, str] | None = None) -> None:
        """A one-line error, listing the valid ones, for the first name that is no option
        (keyword arguments given from Python are checked the same way)."""
        kinds = self.settable() if kinds is None else kinds
        for name in names:
            if name not in kinds:
                valid = ", ".join(f"{k} ({v})" for k, v in kinds.items()) or "none"
                raise BadInput(f"{self.name} has no option {name!r} (options: {valid})")


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
