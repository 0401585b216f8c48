"""Imports inside ``nlp_distill/`` flow one way: each unit (a subpackage or a top-level module)
imports only itself and the units listed before it in ``LAYERS``. Imports inside functions count
(a lazy import is still a dependency). The library never imports the CLI side."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "nlp_distill"

# The intended order, lowest first: a unit may import only itself and units before it.
LAYERS = [
    "errors", "io", "precision",  # leaves: exceptions, atomic files, autocast
    "integrations", "integrations.tracking",  # run trackers (report_to): their packages imported only when named
    "utils",  # process-level helpers: torchrun ranks, heap growth, quiet HF loading
    "config", "model_card",
    "data",  # text, labels, vocabularies, alignment, batching, augmentation
    "metrics",  # scoring by the tag scheme
    "modules",  # network pieces: embedders, encoders, CRF, the hard-label loss
    "models",  # NeuralTagger, TransformerTokenClassifier, the registry of model kinds
    "distill",  # teachers, KD losses, teacher caches and transfer stores
    "training",  # the generic loop, checkpoints
    "evaluation",  # cross-validation of recipes: folds, paired intervals, the resumable campaign
    "engines",  # Ray Data labeling: teachers on many workers through Ray's own API
    "export",  # ONNX, compact folders, torch-free runtimes
    "pipeline", "pipelines", "serving", "api",  # user-facing workflows built from everything above
    "integrations.spacy",  # the spaCy factory: a pipeline inside spaCy
    "__init__",  # the package's lazy exports
]
FORBIDDEN = {"click", "argparse", "procedures"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _targets(path: Path, tree: ast.AST) -> List[Tuple[str, int]]:
    """(imported name, line) of every import in the file, relative imports resolved; for
    ``from pkg import name`` the target is ``pkg.name`` when that is a module."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if _is_module(sub) else base, node.lineno))
    return out


def _unit(module: str) -> str:
    """``nlp_distill.data.conll`` -> ``data``; ``nlp_distill`` -> ``__init__``; an integration is
    a unit of its own (``integrations.tracking``), placed by what it bridges to."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "integrations":
        return f"integrations.{parts[2]}"
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> Tuple[Dict[str, Set[str]], Dict[Tuple[str, str], str], List[str]]:
    """(module -> imported library modules, (module, target) -> "file:line", forbidden imports)."""
    edges: Dict[str, Set[str]] = {}
    where: Dict[Tuple[str, str], str] = {}
    forbidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        edges.setdefault(me, set())
        for target, line in _targets(path, ast.parse(path.read_text(encoding="utf-8"), str(path))):
            loc = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target.split(".")[0] in FORBIDDEN:
                forbidden.append(f"{loc} imports {target}")
            if target == "nlp_distill" or target.startswith("nlp_distill."):
                if target != me:
                    edges[me].add(target)
                    where.setdefault((me, target), loc)
    return edges, where, forbidden


def back_edges(edges: Dict[str, Set[str]], where: Dict[Tuple[str, str], str]) -> List[str]:
    """Each import of a unit placed above the importer in ``LAYERS`` (or of an unlisted unit)."""
    rank = {u: i for i, u in enumerate(LAYERS)}
    out = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            a, b = _unit(src), _unit(dst)
            for u in (a, b):
                if u not in rank:
                    out.append(f"{where[src, dst]}: unit {u!r} is not placed in LAYERS")
            if a in rank and b in rank and rank[b] > rank[a]:
                out.append(f"{where[src, dst]}: {src} ({a}) imports {dst} ({b}), a higher layer")
    return out


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_every_module_and_its_imports():
    edges, _, _ = _graph()
    assert "nlp_distill.models.neural_tagger" in edges
    assert "nlp_distill.modules.crf" in edges["nlp_distill.models.neural_tagger"]
    assert "nlp_distill.data.conll" in edges["nlp_distill.data.labels"]


def test_imports_flow_down_the_layers():
    edges, where, _ = _graph()
    bad = back_edges(edges, where)
    assert not bad, "imports against the layer order (tests/test_import_graph.py LAYERS):\n" + "\n".join(bad)


def test_no_module_level_import_cycles():
    edges, _, _ = _graph()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_library_never_imports_the_cli_side():
    _, _, forbidden = _graph()
    assert not forbidden, "\n".join(forbidden)


def test_checks_catch_a_planted_back_edge_and_cycle():
    """The checks themselves on a small graph: a data module importing a model, and a cycle."""
    edges = {"nlp_distill.data.a": {"nlp_distill.models.b"}, "nlp_distill.models.b": {"nlp_distill.data.a"}}
    where = {("nlp_distill.data.a", "nlp_distill.models.b"): "a.py:1", ("nlp_distill.models.b", "nlp_distill.data.a"): "b.py:1"}
    assert back_edges(edges, where) == ["a.py:1: nlp_distill.data.a (data) imports nlp_distill.models.b (models), a higher layer"]
    assert cycles(edges) == [["nlp_distill.data.a", "nlp_distill.models.b"]]


# packages whose modules may not import another unit's private names (tests may: they test internals)
CODE_PACKAGES = ("nlp_distill", "procedures", "benchmarks")


def _private_unit(module: str) -> str:
    """What a private name is private to: its subpackage inside ``nlp_distill``
    (``nlp_distill.data``), else its own module (``nlp_distill.io``, ``procedures.search``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "nlp_distill" and len(parts) > 2 else module


def private_imports(path: Path, tree: ast.AST, me: str) -> List[str]:
    """``from X import _name`` in module ``me`` where X belongs to another unit (``_private_unit``)."""
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        for a in node.names:
            private = a.name.startswith("_") and not a.name.startswith("__")
            if private and base.split(".")[0] in CODE_PACKAGES and _private_unit(base) != _private_unit(me):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {me} imports {base}.{a.name}")
    return out


def test_no_module_imports_another_units_private_name():
    """A name with a leading underscore is used only inside its own unit: what another package needs
    is public (named, documented, typed) in the unit that owns it."""
    bad = []
    for root in CODE_PACKAGES:
        for path in sorted((PACKAGE.parent / root).rglob("*.py")):
            me = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            me = me[: -len(".__init__")] if me.endswith(".__init__") else me
            bad += private_imports(path, ast.parse(path.read_text(encoding="utf-8"), str(path)), me)
    assert not bad, "private names imported across units:\n" + "\n".join(bad)


def test_private_import_check_catches_a_planted_import_and_allows_one_inside_a_unit():
    planted = ast.parse("from procedures.tagger_kd import _kd_run\nfrom nlp_distill.data.labels import _spans\n")
    path = PACKAGE.parent / "procedures" / "search.py"
    assert [line.split(": ", 1)[1] for line in private_imports(path, planted, "procedures.search")] == [
        "procedures.search imports procedures.tagger_kd._kd_run",
        "procedures.search imports nlp_distill.data.labels._spans"]
    inside = ast.parse("from nlp_distill.data.labels import _spans\n")
    assert private_imports(PACKAGE / "data" / "augment.py", inside, "nlp_distill.data.augment") == []
