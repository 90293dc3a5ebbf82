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
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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
