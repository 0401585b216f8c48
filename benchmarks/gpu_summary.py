"""Summarise a folder of runs named ``GROUP_sN`` / ``GROUP_LN``: per group, dev and test F1 as
mean ± std over its runs, the teacher's (or ensemble's) F1 where the runs recorded one, epochs and
training seconds. Prints a Markdown table; ``--json`` writes every run's figures too.

Run: ``python -m benchmarks.gpu_summary runs/gpu --json summary.json``
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Dict, List, Optional

from benchmarks.common import add_json, markdown_table, parser, save_json


def _ms(xs: List[float]) -> str:
    if not xs:
        return "-"
    return f"{mean(xs):.3f} ± {stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def collect(root: Path) -> Dict[str, List[dict]]:
    """Runs with a metrics.json, grouped by folder name without its ``_sN`` seed suffix."""
    groups: Dict[str, List[dict]] = defaultdict(list)
    for m in sorted(root.glob("*/metrics.json")):
        name = m.parent.name
        met = json.loads(m.read_text())
        row = {"run": name, "dev": met["dev"]["f1"], "test": met["test"]["f1"],
               "epochs": met.get("epochs_run"), "best_epoch": met.get("best_epoch"),
               "train_seconds": met.get("train_seconds"), "parameters": met.get("parameters")}
        if isinstance(met.get("teacher"), dict) and "test" in met["teacher"]:
            row["teacher_dev"], row["teacher_test"] = met["teacher"]["dev"]["f1"], met["teacher"]["test"]["f1"]
        groups[re.sub(r"_s\d+$", "", name)].append(row)
    return groups


def table(groups: Dict[str, List[dict]]) -> str:
    rows = []
    for g, runs in groups.items():
        teach = [r for r in runs if "teacher_test" in r]
        t = (f"{mean(r['teacher_dev'] for r in teach):.3f} / {mean(r['teacher_test'] for r in teach):.3f}"
             if teach else "-")
        ep = ", ".join(f"{r['epochs']}({r['best_epoch']})" for r in runs)
        secs = mean(r["train_seconds"] or 0 for r in runs)
        rows.append([g, len(runs), _ms([r["dev"] for r in runs]), _ms([r["test"] for r in runs]), t, ep, f"{secs:.0f}",
                     runs[0]["parameters"] or "-"])
    return markdown_table(["group", "runs", "dev F1", "test F1", "teacher dev / test", "epochs (best)", "train s",
                           "params"], rows)


def main(argv: Optional[List[str]] = None) -> Dict[str, List[dict]]:
    ap = parser("gpu_summary", __doc__)
    ap.add_argument("root")
    add_json(ap)
    a = ap.parse_args(argv)
    groups = collect(Path(a.root))
    print(table(groups))
    save_json(a.json, groups)
    return groups


if __name__ == "__main__":
    main()
