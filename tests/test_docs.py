"""The repository explains itself: every document it cites is in it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"\bdocs/[\w./-]+\.(?:md|png)")


def _text_files():
    for top in ("src", "tests", "benchmarks", "docs"):
        for path in (ROOT / top).rglob("*"):
            if path.suffix in {".py", ".md", ".yaml"}:
                yield path
    yield ROOT / "README.md"


def test_every_cited_document_exists_and_no_outside_spec_is_cited():
    missing = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8")
        for cited in CITED.findall(text):
            if not (ROOT / cited.rstrip(".")).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
        if path.name != "test_docs.py" and ("SPEC.md" in text or "SPEC step" in text):
            missing.append(f"{path.relative_to(ROOT)} cites a SPEC document the repository does not contain")
    assert not missing, "\n".join(missing)
