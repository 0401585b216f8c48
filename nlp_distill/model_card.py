"""A model card (``model/README.md``) written beside every trained model.

The card says what the folder holds and how it was made, so a copied model explains itself:
task, labels, data, teacher(s), test/dev metrics, the exact command and how to load it.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

CARD_FILE = "README.md"


def _metric_rows(metrics: Dict[str, Any]) -> List[str]:
    """Table rows of the gold scores, then of the agreement with the teacher (distillation from
    unlabeled text: without gold dev tags the dev scores are that agreement)."""
    rows = []
    agree = metrics.get("agreement") if isinstance(metrics.get("agreement"), dict) else {}
    teacher_dev = metrics.get("dev_tags") == "teacher"
    named = [("test", metrics.get("test")), ("dev" if not teacher_dev else "", None if teacher_dev else metrics.get("dev")),
             ("test, agreement with the teacher", agree.get("test")), ("dev, agreement with the teacher", agree.get("dev"))]
    for split, m in named:
        if not isinstance(m, dict):
            continue
        for key in ("f1", "precision", "recall", "accuracy"):
            if isinstance(m.get(key), (int, float)):
                rows.append(f"| {split} | {key} | {m[key]:.4f} |")
    return rows


def _labels(model_dir: Path) -> List[str]:
    """The label list a saved model's ``config.json`` records (``labels``, or HF's ``id2label``)."""
    from nlp_distill.io import read_json

    p = model_dir / "config.json"
    cfg = read_json(p) if p.is_file() else {}
    if isinstance(cfg.get("labels"), list):
        return [str(x) for x in cfg["labels"]]
    if isinstance(cfg.get("id2label"), dict):
        return [cfg["id2label"][k] for k in sorted(cfg["id2label"], key=int)]
    return []


def _data_note(metrics: Dict[str, Any]) -> str:
    """How the run used its data: gold train / dev, or text tagged by the teacher alone."""
    if metrics.get("dev_tags") == "teacher":
        return "text tagged by the teacher; the best epoch by agreement with it on held-out text"
    if metrics.get("agreement"):
        return "text tagged by the teacher; gold dev picks the best epoch, test scored once with it"
    return "train / dev; test scored once with the best dev model"


def render_model_card(model_dir, config: Dict[str, Any], metrics: Optional[Dict[str, Any]],
                      command: Sequence[str]) -> str:
    """The card's markdown text.

    Args:
        model_dir: the saved model folder (read for its label list).
        config: the run's ``config.json`` dict (``task``, ``data_dir`` and setting sections).
        metrics: the run's ``metrics.json`` dict (``dev`` / ``test`` sub-dicts), or None.
        command: the command line that trained the model.
    """
    model_dir = Path(model_dir)
    task = config.get("task", "?")
    labels = _labels(model_dir)
    teacher = (config.get("kd") or {}).get("teacher_model_path")
    lines = [f"# {model_dir.parent.name or model_dir.name}: a `{task}` model made with nlp-distill", "",
             f"- **Task**: sequence tagging (`nlp-train {task}`)",
             f"- **Labels** ({len(labels)}): {', '.join(f'`{x}`' for x in labels) if labels else 'see config.json'}",
             f"- **Data**: `{config.get('data_dir', '?')}` ({_data_note(metrics or {})})"]
    if teacher:
        lines.append(f"- **Teacher(s)**: {', '.join(f'`{t}`' for t in (teacher if isinstance(teacher, list) else [teacher]))}")
    for warning in (metrics or {}).get("warnings", []):
        lines += ["", f"> **Warning**: {warning}"]
    rows = _metric_rows(metrics or {})
    if rows:
        lines += ["", "## Metrics", "", "| split | metric | value |", "|---|---|---|", *rows]
    lines += ["", "## Made by", "", "```bash", " ".join(shlex.quote(c) for c in command), "```",
              "", "Every setting of the run is in the run folder's `config.json`.",
              "", "## Use", "", "```python", "from nlp_distill import pipeline",
              "", f"ner = pipeline({str(model_dir)!r})", 'ner("Text to tag")  # [{"entity_group", "score", "word", "start", "end"}, ...]',
              "```", "", "```bash", f"nlp-inference predict --model_dir {shlex.quote(str(model_dir))} --data_file text.txt",
              f"nlp-serve --model_dir {shlex.quote(str(model_dir))}", "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir, config: Dict[str, Any], metrics: Optional[Dict[str, Any]],
                     command: Sequence[str]) -> Path:
    """Write :func:`render_model_card` to ``model_dir/README.md``; returns its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_model_card(model_dir, config, metrics, command), encoding="utf-8")
    return path
