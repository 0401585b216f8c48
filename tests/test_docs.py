"""The documentation pages that are generated or that list the code stay true to it."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_api_md_is_generated_from_the_package():
    from tools.api_docs import render

    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/api.md is stale: python -m tools.api_docs > docs/api.md"


def test_docs_api_md_has_a_section_for_every_exported_name():
    import nlp_distill
    from tools.api_docs import render

    page = render()
    missing = [n for n in nlp_distill.__all__ if f"### `{n}`" not in page]
    assert not missing, f"names of nlp_distill.__all__ without a section: {missing}"


def _layout_files() -> set:
    """The ``*.py`` paths the Layout block of docs/architecture.md names (folders by indentation)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    stack, out = [], set()
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 20):  # blank, or a description's continuation
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name)
        elif name.endswith(".py"):
            out.add("".join(stack) + name)
    return out


def test_architecture_md_lists_every_python_file_of_the_packages():
    real = {str(f.relative_to(ROOT)) for d in ("nlp_distill", "procedures", "benchmarks", "tools")
            for f in (ROOT / d).rglob("*.py")}
    listed = _layout_files()
    assert not real - listed, f"docs/architecture.md Layout misses {sorted(real - listed)}"
    assert not listed - real, f"docs/architecture.md Layout names files that do not exist: {sorted(listed - real)}"


def test_no_internal_work_wording_in_the_repository_files():
    """Files speak to users: no internal issue numbers, "stops", milestones or work sessions (an
    ONNX Runtime InferenceSession, pytest's session scope or ORT's "session load" are fine)."""
    import re
    import subprocess

    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.sh", "*.cfg", "*.json"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    bad = re.compile(r"issue [0-9]+|issue-?[0-9]|\bstop [0-9]+|milestone|\bsessions? [0-9]|GPU session|"
                     r"this session|lent-GPU session", re.IGNORECASE)
    hits = []
    for name in files:
        path = ROOT / name
        if name.startswith("tests/test_docs.py") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if bad.search(line):
                hits.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not hits, "internal work wording in user-facing files:\n" + "\n".join(hits)
