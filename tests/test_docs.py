"""docs/EQUIVALENCE.md stays true to the code: every test it names exists, and every
citation of it in the code names one of its sections."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENCE = REPO / "docs" / "EQUIVALENCE.md"


def test_every_test_the_equivalence_document_names_exists() -> None:
    named = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", EQUIVALENCE.read_text()))
    assert len(named) > 30
    missing = [f"{path}::{name}" for path, name in sorted(named) if f"def {name}(" not in (REPO / path).read_text()]
    assert not missing, missing


def test_every_citation_of_the_equivalence_document_names_one_of_its_sections() -> None:
    sections = set(re.findall(r"^## (.+)$", EQUIVALENCE.read_text(), flags=re.MULTILINE))
    cited = {}
    for path in sorted(p for folder in ("harness", "backends", "tests") for p in (REPO / folder).rglob("*.py")):
        text = path.read_text()
        if path != Path(__file__).resolve():
            assert not re.search(r"(?<!docs/)EQUIVALENCE\.md", text), f"{path}: cites the document without docs/"
        cited.update({section: path for section in re.findall(r"docs/EQUIVALENCE\.md, '([^']+)'", text)})
    assert {"Adam", "Losses"} <= set(cited)
    unknown = {section: str(path.relative_to(REPO)) for section, path in cited.items() if section not in sections}
    assert not unknown, f"sections not in docs/EQUIVALENCE.md: {unknown}"
