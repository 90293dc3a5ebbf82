"""The demo catalogue (no root): demos are files, found like topologies, listed with what they
show and their options; unknown names and broken files are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mptcplab.demo import entries, entry

EXTERNAL = '''"""A demo of my own: it shows nothing yet.

Told before it runs.
"""

TOPOLOGY = "two-paths"
SECONDS = 1


def run(scene, *, rounds: int = 3, label: str = "x"):
    scene.claim("nothing", True)
'''


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcplab.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_the_package_demos_are_listed_in_order_with_a_summary_each() -> None:
    found = entries()
    assert list(found)[:4] == ["tour", "handshake", "join", "add-addr"]
    assert {"fallback", "checksum", "backup", "aggregate"} <= set(found)
    for name, e in found.items():
        assert e.summary and e.story, name
        assert e.sequence or callable(e.module.run), name
    assert found["tour"].sequence == ("handshake", "join", "add-addr")
    assert found["fallback"].options == {"retries": 2, "size": 3000}
    assert "nft" in found["checksum"].needs


def test_a_directory_in_mptcplab_demos_adds_demos(tmp_path: Path) -> None:
    (tmp_path / "my_demo.py").write_text(EXTERNAL)
    (tmp_path / "_helper.py").write_text("x = 1\n")
    res = cli("demo", "--json", env={"MPTCPLAB_DEMOS": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert "_helper" not in rows and "helper" not in rows
    mine = rows["my-demo"]
    assert mine["summary"] == "A demo of my own: it shows nothing yet."
    assert mine["options"] == {"rounds": 3, "label": "x"} and mine["topology"] == "two-paths"
    assert entry(str(tmp_path / "my_demo.py")).name == "my-demo"


def test_unknown_demo_and_broken_files_are_one_line_errors(tmp_path: Path) -> None:
    res = cli("demo", "handshak")
    assert res.returncode == 3 and res.stderr.count("\n") == 1
    assert "unknown demo 'handshak'" in res.stderr and "did you mean handshake" in res.stderr
    (tmp_path / "empty.py").write_text('"""No run here."""\n')
    res = cli("demo", str(tmp_path / "empty.py"))
    assert res.returncode == 3 and "defines neither run() nor SEQUENCE" in res.stderr
    res = cli("demo", str(tmp_path / "missing.py"))
    assert res.returncode == 3 and "no demo file" in res.stderr
    res = cli("demo", "tour", "--set", "size=1")
    assert res.returncode == 2 and "tour" in res.stderr
    res = cli("demo", "handshake", "--step", "--json")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
