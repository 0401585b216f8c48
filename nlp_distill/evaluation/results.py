"""The scores of a cross-validation campaign, from the predictions its finished runs left.

Only *complete* folds (the teacher, where one is used, and every recipe with every seed tagged
the fold's test sentences) enter the pooled figures and the intervals, so every system is scored
on the same sentences with the same seeds. ``per_fold`` lists every fold a system finished.
"""
from __future__ import annotations

import datetime
import platform
from typing import Dict, List, Optional

import numpy as np

from nlp_distill.evaluation.plan import PREDICTIONS, TEACHER, Campaign
from nlp_distill.evaluation.folds import test_sentences
from nlp_distill.evaluation.paired import paired_difference, paired_ratio, pooled_f1, resample_weights, sentence_counts
from nlp_distill.io import atomic_open, read_json, write_json


def _fold_counts(camp: Campaign, k: int) -> Dict[str, Dict[Optional[int], np.ndarray]]:
    """System -> seed -> (n_test, 3) counts on fold ``k``, for the runs that finished it."""
    gold = [s.tags for s in test_sentences(camp.pool, camp.spec.folds, k)]
    out: Dict[str, Dict[Optional[int], np.ndarray]] = {}
    for job in camp.jobs(k):
        p = job.folder / PREDICTIONS
        if p.is_file():
            out.setdefault(job.system, {})[job.seed] = sentence_counts(gold, read_json(p)["tags"])
    return out


def _systems(camp: Campaign) -> List[str]:
    return ([TEACHER] if camp.teacher_root is not None else []) + [r.name for r in camp.spec.recipes]


def _seeds_of(camp: Campaign, system: str) -> List[Optional[int]]:
    return [None] if system == TEACHER else list(camp.spec.seeds)


def score_campaign(camp: Campaign) -> Dict:
    """The results dict of ``results.json`` (see ``docs/crossval.md``)."""
    systems = _systems(camp)
    per_fold: Dict[str, Dict[str, float]] = {s: {} for s in systems}
    pooled: Dict[str, List[np.ndarray]] = {s: [] for s in systems}
    by_seed: Dict[str, Dict[Optional[int], List[np.ndarray]]] = {s: {} for s in systems}
    complete = []
    for k in camp.spec.folds_to_run():
        counts = _fold_counts(camp, k)
        for s in systems:
            if all(seed in counts.get(s, {}) for seed in _seeds_of(camp, s)):
                per_fold[s][str(k)] = pooled_f1(sum(counts[s].values()))
        if all(str(k) in per_fold[s] for s in systems):
            complete.append(k)
            for s in systems:
                pooled[s].append(sum(counts[s].values()))  # seeds pooled sentence by sentence
                for seed, c in counts[s].items():
                    by_seed[s].setdefault(seed, []).append(c)
    rows = {s: np.concatenate(pooled[s]) if pooled[s] else np.zeros((0, 3), np.int64) for s in systems}
    weights = resample_weights(len(rows[systems[0]]), camp.spec.bootstrap) if complete else None
    res = {"folds_complete": complete, "n_sentences": int(len(rows[systems[0]])), **_meta(camp)}
    if camp.teacher_root is not None:
        res["teacher"] = {"command": camp.spec.teacher.command, "pooled_f1": pooled_f1(rows[TEACHER]) if complete else None,
                          "per_fold": per_fold[TEACHER], "folder": str(camp.teacher_root)}
    res["recipes"] = {}
    for r in camp.spec.recipes:
        entry = {"command": r.command, "pooled_f1": pooled_f1(rows[r.name]) if complete else None,
                 "per_fold": per_fold[r.name],
                 "per_seed": {str(s): pooled_f1(np.concatenate(c)) for s, c in by_seed[r.name].items()},
                 "train_minutes": _train_minutes(camp, r.name)}
        if camp.teacher_root is not None and complete:
            entry["teacher_ratio"] = paired_ratio(rows[r.name], rows[TEACHER], weights)
        res["recipes"][r.name] = entry
    res["differences"] = []
    if complete:  # later recipes against earlier ones, then the teacher against each recipe
        names = [r.name for r in camp.spec.recipes]
        pairs = [(a, b) for i, a in enumerate(names) for b in names[:i]]
        pairs += [(TEACHER, n) for n in names] if camp.teacher_root is not None else []
        for a, b in pairs:
            res["differences"].append({"a": a, "b": b, **paired_difference(rows[a], rows[b], weights)})
    return res


def _train_minutes(camp: Campaign, system: str) -> Optional[float]:
    """Mean training minutes of the system's runs trained by this campaign (None: none timed)."""
    secs = [read_json(j.folder / PREDICTIONS).get("train_seconds", 0.0) for k in camp.spec.folds_to_run()
            for j in camp.jobs(k) if j.system == system and (j.folder / PREDICTIONS).is_file()]
    secs = [s for s in secs if s > 1.0]  # runs found finished cost nothing here
    return round(float(np.mean(secs)) / 60, 2) if secs else None


def _meta(camp: Campaign) -> Dict:
    from nlp_distill.io import LIBRARY_VERSION
    from nlp_distill.utils.machine import machine_description

    versions = {"nlp_distill": LIBRARY_VERSION, "python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "seqeval"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a version is a record, never a reason to fail
            versions[name] = None
    s = camp.spec
    return {"command": s.command_line, "data_dir": s.data_dir, "data_fingerprint": camp.pool.fingerprint,
            "folds": s.folds, "run_folds": s.folds_to_run(), "seeds": list(s.seeds), "bootstrap": s.bootstrap,
            "machine": machine_description(), "versions": versions,
            "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def write_results(camp: Campaign) -> Dict:
    """Score the campaign and write ``results.json`` and ``results.md`` into its output folder."""
    res = score_campaign(camp)
    write_json(camp.out / "results.json", res)
    with atomic_open(camp.out / "results.md") as f:
        f.write(markdown(res))
    return res


def _f(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def _ci(ci: List[float], pct: bool = False) -> str:
    return f"[{ci[0] * 100:.1f}%, {ci[1] * 100:.1f}%]" if pct else f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"


def markdown(res: Dict) -> str:
    """The results as a markdown page: systems, then paired differences (F1 points, 95% interval)."""
    folds = [str(k) for k in res["run_folds"]]
    lines = [f"Cross-validation: folds {', '.join(map(str, res['folds_complete'])) or 'none'} complete of "
             f"{res['folds']} ({res['n_sentences']} test sentences pooled), seeds {res['seeds']}.", "",
             f"Machine: {res['machine']}. Command: `{res['command']}`", "",
             "| system | command | pooled F1 | of teacher | " + " | ".join(f"fold {k}" for k in folds) + " |",
             "|---|---|---|---|" + "---|" * len(folds)]
    systems = ([("teacher", res["teacher"])] if "teacher" in res else []) + list(res["recipes"].items())
    for name, e in systems:
        ratio = e.get("teacher_ratio")
        keep = f"{ratio['ratio'] * 100:.1f}% {_ci(ratio['ci95'], pct=True)}" if ratio else "-"
        lines.append(f"| {name} | `{e['command']}` | {_f(e['pooled_f1'])} | {keep} | "
                     + " | ".join(_f(e["per_fold"].get(k)) for k in folds) + " |")
    if res["differences"]:
        lines += ["", "| a - b | F1 points | 95% interval | a better in |", "|---|---|---|---|"]
        for d in res["differences"]:
            lines.append(f"| {d['a']} - {d['b']} | {d['diff'] * 100:+.2f} | {_ci(d['ci95'])} | "
                         f"{d['p_a_better'] * 100:.0f}% of resamples |")
    return "\n".join(lines) + "\n"
