"""The documentation pages that are generated or that list the code stay true to it."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_api_md_is_generated_from_the_package():
    from procedures.api_docs import render

    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/api.md is stale: python -m procedures.api_docs > docs/api.md"


def test_docs_api_md_has_a_section_for_every_exported_name():
    import nlp_distill
    from procedures.api_docs import render

    page = render()
    missing = [n for n in nlp_distill.__all__ if f"### `{n}`" not in page]
    assert not missing, f"names of nlp_distill.__all__ without a section: {missing}"
