"""docs/cases.md and docs/conformance.md say what is collected: the case count, every case,
each file's count, and every requirement of cases/requirements.py."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "cases"], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout
    ids = [line for line in out.splitlines() if "::" in line]
    assert ids, out[-2000:]
    return ids


def test_cases_doc_counts_match_the_collection(collected: list[str]) -> None:
    doc = (ROOT / "docs" / "cases.md").read_text()
    (total,) = re.findall(r"\*\*(\d+) cases\*\*", doc)
    assert int(total) == len(collected)
    per_file = Counter(i.split("::")[0].removeprefix("cases/") for i in collected)
    claimed = {f: int(n) for f, n in re.findall(r"^#### .*: `(test_\w+\.py)`, (\d+) cases$",
                                                 doc, re.MULTILINE)}
    assert claimed == dict(per_file)


def test_every_case_is_in_the_cases_doc(collected: list[str]) -> None:
    doc = (ROOT / "docs" / "cases.md").read_text()
    names = {i.split("::")[1].split("[")[0] for i in collected}
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert missing == []


def test_conformance_doc_lists_every_requirement() -> None:
    sys.path.insert(0, str(ROOT / "cases"))
    try:
        from requirements import REQUIREMENTS
    finally:
        sys.path.remove(str(ROOT / "cases"))
    doc = (ROOT / "docs" / "conformance.md").read_text()
    rows = re.findall(r"^\| (3[\w.-]*) \|", doc, re.MULTILINE)
    assert rows == [r.id for r in REQUIREMENTS], "regenerate: pytest cases/ --requirements=docs/conformance.md"
