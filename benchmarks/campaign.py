"""Run a campaign: a JSON plan of commands (training runs, benchmarks), one after another, then a
summary table of the runs' dev and test F1.

A plan (``benchmarks/plans/*.json``)::

    {"description": "what the campaign measures",
     "vars": {"DATA": "data/wnut16", "RUNS": "runs/baseline", "DEVICE": "cuda"},
     "runs": [{"name": "teacher_s1", "output_dir": "{RUNS}/teacher_s1",
               "command": ["nlp-train", "transformer_token", "--data_dir", "{DATA}",
                           "--output_dir", "{output_dir}", "--seed", "1", "--device", "{DEVICE}"]},
              {"name": "label_speed", "output_dir": "{RUNS}/label_speed", "done": "label_speed.json",
               "command": ["python", "-m", "benchmarks.label_speed", "...",
                           "--json", "{output_dir}/label_speed.json"]}]}

``{NAME}`` is replaced by the plan's ``vars`` (``--set NAME=VALUE`` overrides one) and
``{output_dir}`` by the entry's folder. An entry is done when its ``done`` file (relative to its
output folder; default ``metrics.json``, which ``nlp-train`` writes when a run finishes) exists:
a rerun of the plan skips it, so an interrupted campaign resumes where it stopped. Each command's
output goes to ``OUTPUT_DIR/campaign.log``; a failed command is recorded and the next one runs
(``--stop_on_error`` stops instead). ``python`` runs this interpreter, ``nlp-train`` and the other
console scripts come from the installed package.

Run: ``python -m benchmarks.campaign benchmarks/plans/teachers_and_students.json --set DEVICE=cpu
--json runs/baseline/summary.json`` (``--dry_run`` prints the commands, ``--only 'teacher_*'``
picks entries by name).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import add_json, markdown_table, parser, save_json

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill(text: str, values: Dict[str, str]) -> str:
    """``text`` with every ``{NAME}`` replaced; an unknown name is an error naming it."""
    def one(m: "re.Match[str]") -> str:
        if m.group(1) not in values:
            raise ValueError(f"{{{m.group(1)}}} in {text!r} is not a variable of the plan (vars: {sorted(values)})")
        return values[m.group(1)]
    return _VAR.sub(one, text)


def load_plan(path, overrides: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """The plan's entries with variables filled in: ``name``, ``output_dir``, ``command`` (list),
    ``done`` (path), ``env`` (dict).

    Raises:
        ValueError: a malformed plan (names the entry), an unknown variable or a repeated name.
    """
    plan = json.loads(Path(path).read_text(encoding="utf-8"))
    values = {k: str(v) for k, v in plan.get("vars", {}).items()}
    for o in overrides:
        key, sep, val = o.partition("=")
        if not sep:
            raise ValueError(f"--set {o!r}: expected NAME=VALUE")
        values[key] = val
    entries, seen = [], set()
    for k, run in enumerate(plan.get("runs", [])):
        if not isinstance(run.get("command"), list) or not run.get("output_dir") or not run.get("name"):
            raise ValueError(f"{path}: runs[{k}] needs a name, an output_dir and a command (a list of words)")
        if run["name"] in seen:
            raise ValueError(f"{path}: the name {run['name']!r} is used twice")
        seen.add(run["name"])
        out = _fill(run["output_dir"], values)
        local = {**values, "output_dir": out}
        entries.append({"name": run["name"], "output_dir": out,
                        "command": [_fill(str(w), local) for w in run["command"]],
                        "done": str(Path(out) / _fill(run.get("done", "metrics.json"), local)),
                        "env": {k: _fill(str(v), local) for k, v in run.get("env", {}).items()}})
    return entries


def _argv(command: List[str]) -> List[str]:
    """``python`` is this interpreter; a console script is taken from this interpreter's folder
    when it is there (the package's own ``nlp-train``), else from PATH."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    local = Path(sys.executable).parent / command[0]
    return [str(local), *command[1:]] if local.is_file() else command


def run_entry(entry: Dict[str, Any]) -> Dict[str, Any]:
    """Run one entry (output to ``OUTPUT_DIR/campaign.log``); returns its name, status
    (``done`` | ``failed``), return code and seconds."""
    out = Path(entry["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "campaign.log", "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(entry["command"]) + "\n")
        log.flush()
        rc = subprocess.call(_argv(entry["command"]), stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **entry["env"]})
    ok = rc == 0 and Path(entry["done"]).exists()
    return {"name": entry["name"], "status": "done" if ok else "failed", "rc": rc,
            "seconds": round(time.perf_counter() - start, 1)}


def run_plan(entries: List[Dict[str, Any]], stop_on_error: bool = False, dry_run: bool = False) -> List[Dict[str, Any]]:
    """Run the entries not yet done, one after another, printing one line per entry."""
    results = []
    for k, e in enumerate(entries, start=1):
        if Path(e["done"]).exists():
            res = {"name": e["name"], "status": "skipped (done)", "rc": None, "seconds": None}
        elif dry_run:
            res = {"name": e["name"], "status": "to run", "rc": None, "seconds": None}
            print(" ".join(e["command"]), flush=True)
        else:
            print(f"[{k}/{len(entries)}] {e['name']}: {' '.join(e['command'])}", flush=True)
            res = run_entry(e)
            print(f"[{k}/{len(entries)}] {e['name']}: {res['status']} (rc {res['rc']}, {res['seconds']} s; "
                  f"log {e['output_dir']}/campaign.log)", flush=True)
        results.append(res)
        if stop_on_error and res["status"] == "failed":
            break
    return results


def run_metrics(output_dir) -> Dict[str, Any]:
    """dev / test F1, epochs, training seconds and parameters of a finished ``nlp-train`` run
    (``{}`` when the folder holds no ``metrics.json``)."""
    path = Path(output_dir) / "metrics.json"
    if not path.is_file():
        return {}
    met = json.loads(path.read_text(encoding="utf-8"))
    f1 = lambda split: (met.get(split) or {}).get("f1") if isinstance(met.get(split), dict) else None  # noqa: E731
    return {"dev": f1("dev"), "test": f1("test"), "best_epoch": met.get("best_epoch"),
            "train_seconds": met.get("train_seconds"), "parameters": met.get("parameters")}


def _ms(xs: List[float]) -> str:
    if not xs:
        return "-"
    return f"{mean(xs):.3f} ± {stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def summary(entries: List[Dict[str, Any]], results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per entry: its status and metrics; per group (the name without an ``_sN`` seed suffix):
    dev and test F1 as mean ± std over the group's finished runs."""
    runs = []
    for e, r in zip(entries, results):
        runs.append({**r, "output_dir": e["output_dir"], **run_metrics(e["output_dir"])})
    groups: Dict[str, List[dict]] = defaultdict(list)
    for r in runs:
        if r.get("test") is not None or r.get("dev") is not None:
            groups[re.sub(r"_s\d+$", "", r["name"])].append(r)
    return {"runs": runs, "groups": {g: {"runs": len(rs), "dev": [r["dev"] for r in rs], "test": [r["test"] for r in rs]}
                                     for g, rs in groups.items()}}


def tables(summ: Dict[str, Any]) -> str:
    """The Markdown tables of :func:`summary`: entries, then groups."""
    rows = [[r["name"], r["status"], "-" if r["seconds"] is None else r["seconds"],
             "-" if r.get("dev") is None else f"{r['dev']:.3f}", "-" if r.get("test") is None else f"{r['test']:.3f}"]
            for r in summ["runs"]]
    out = markdown_table(["entry", "status", "seconds", "dev F1", "test F1"], rows)
    if summ["groups"]:
        g_rows = [[g, v["runs"], _ms([x for x in v["dev"] if x is not None]), _ms([x for x in v["test"] if x is not None])]
                  for g, v in summ["groups"].items()]
        out += "\n\n" + markdown_table(["group", "runs", "dev F1", "test F1"], g_rows)
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = parser("campaign", __doc__)
    ap.add_argument("plan", help="the plan's JSON file")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a variable of the plan (repeat)")
    ap.add_argument("--only", default=None, help="comma list of entry names or patterns (fnmatch) to run")
    ap.add_argument("--stop_on_error", action="store_true", help="stop at the first failed entry")
    ap.add_argument("--dry_run", action="store_true", help="print the commands still to run, run nothing")
    add_json(ap)
    a = ap.parse_args(argv)
    entries = load_plan(a.plan, a.set)
    if a.only:
        pats = a.only.split(",")
        entries = [e for e in entries if any(fnmatch.fnmatchcase(e["name"], p) for p in pats)]
    results = run_plan(entries, a.stop_on_error, a.dry_run)
    summ = summary(entries[: len(results)], results)
    print(tables(summ))
    save_json(a.json, {"plan": str(a.plan), "vars": a.set, **summ})
    return summ


if __name__ == "__main__":
    sys.exit(1 if any(r["status"] == "failed" for r in main()["runs"]) else 0)
