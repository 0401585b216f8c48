"""The F1-vs-speed frontier, drawn from the measured results in ``docs/results/*.json``.

A point is plotted only when one results file holds both its test F1 and its speed, so every
point was measured on the machine that file records, and points of different machines never share
a panel: the figure has one panel per machine (log x axis: sentences/s at batch 64; y axis: test
F1, mean over the file's seeds with their spread as an error bar). The points that are not
dominated (no other point of the panel is both faster and more accurate) are joined by a line.

Files are read by the readers below, one per results layout; a file no reader knows is skipped
(its name is logged). A benchmark may also write points directly: a top-level ``"points"`` list
of ``{"label", "kind", "f1", "sent_per_s"}`` (optional ``"f1_std"``, ``"n"``, ``"note"``) and a
``"machine"`` string.

Run: ``python -m benchmarks.frontier`` (writes docs/frontier.png and docs/frontier_points.json)
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Callable, Dict, List, Optional

from benchmarks.common import REPO_ROOT, parser

logger = logging.getLogger(__name__)

KINDS = ("teacher", "transformer student", "student", "compact", "onnx", "spacy")
STYLE = {  # kind -> (marker, colour)
    "teacher": ("s", "#d62728"), "transformer student": ("D", "#ff7f0e"), "student": ("o", "#1f77b4"),
    "compact": ("v", "#2ca02c"), "onnx": ("P", "#9467bd"), "spacy": ("X", "#7f7f7f"),
}
Point = Dict[str, Any]


def _point(label: str, kind: str, f1s: List[float], speed: float, source: str, note: str) -> Point:
    if kind not in KINDS:
        raise ValueError(f"{source}: point {label!r} has kind {kind!r}; expected one of {', '.join(KINDS)}")
    return {"label": label, "kind": kind, "f1": mean(f1s), "f1_std": stdev(f1s) if len(f1s) > 1 else 0.0,
            "n": len(f1s), "sent_per_s": float(speed), "source": source, "note": note}


# ------------------------------------------------------------------ readers: (file, json) -> (machine, points)
PEER_KINDS = {"spacy_efficiency": ("spacy", "spaCy NER, efficiency config"),
              "spacy_accuracy": ("spacy", "spaCy NER, accuracy config (GloVe)"),
              "tagger": ("student", "student, gold labels only (tagger)"),
              "tagger_kd": ("student", "student, tagger_kd defaults"),
              "tagger_kd_pseudo": ("student", "student, tagger_kd_pseudo")}


def read_peers(name: str, d: Dict[str, Any]) -> Optional[tuple]:
    """``benchmarks.peers`` output: test F1 per seed and speed per thread count of each model, all
    gold labels only (a run on a fraction of the gold labels scores another task: skipped)."""
    if not {"models", "speed", "machine"} <= set(d) or d.get("gold_fraction", 1.0) != 1.0:
        return None
    threads = "1" if all("1" in v for v in d["speed"].values()) else None
    points = []
    for model, runs in d["models"].items():
        f1s = [r["test_f1"] for r in runs if r.get("test_f1") is not None]
        speed = d["speed"].get(model, {}).get(threads or "", {}).get("sent_per_s_b64")
        if not f1s or speed is None:
            continue
        kind, label = PEER_KINDS.get(model, ("student", model))
        dirs = sorted({str(r.get("dir")) for r in runs})
        if all(r.get("seed") is None for r in runs):  # a given model folder, not seeds trained by the benchmark
            label += f" ({', '.join(Path(x).name for x in dirs)})"
        points.append(_point(label, kind, f1s, speed, name, f"{len(f1s)} run(s): {', '.join(dirs)}; batch 64, "
                                                           f"{threads} thread"))
    return f"{d['machine']}; {threads} thread", points


def read_medium_compact(name: str, d: Dict[str, Any]) -> Optional[tuple]:
    """``cpu_medium_aug10_compact.json``: the 2x128 student on 10 augmented copies and its compact
    copy (``--pq_head 8000``, the one timed), 5 seeds each, timed in two passes (mean plotted)."""
    if not {"compact_a10", "speed_pass1", "speed_pass2"} <= set(d):
        return None
    models = d["compact_a10"]["models"]
    passes = [d["speed_pass1"], d["speed_pass2"]]
    speed = {k: mean(p[k]["sent_per_s_b64"] for p in passes) for k in ("a10_torch", "a10_compact")}
    return "2-core x86 CPU with AMX (Intel Xeon); 2 threads", [
        _point("student 2x128 (--preset medium --augment 10)", "student", [m["test_f1"] for m in models.values()],
               speed["a10_torch"], name, "5 seeds; batch 64, mean of the file's two speed passes"),
        _point("same, nlp-export compact (2.1 MB)", "compact", [m["test_f1_h8000"] for m in models.values()],
               speed["a10_compact"], name, "5 seeds, --pq_head 8000; batch 64, mean of the two speed passes"),
    ]


def read_idcnn(name: str, d: Dict[str, Any]) -> Optional[tuple]:
    """``cpu_idcnn_kd.json``: the ID-CNN KD student, 3 seeds, and its torch speed (the other timed
    models of that file carry no F1 there)."""
    if not {"runs", "speed"} <= set(d) or "idcnn_base_kd" not in d["speed"]:
        return None
    f1s = [r["test_f1"] for k, r in d["runs"].items() if k.startswith("idcnn_kd")]
    return "2-core x86 CPU with AMX (Intel Xeon); 2 threads", [
        _point("student ID-CNN-CRF, tagger_kd", "student", f1s, d["speed"]["idcnn_base_kd"]["torch"], name,
               f"{len(f1s)} seeds; batch 64, torch")]


RUNTIMES = {"torch": "torch fp32", "torch_bf16": "torch bf16", "ort_fp32": "ONNX fp32", "ort_int8": "ONNX int8"}


def read_onnx_speed(name: str, d: Dict[str, Any]) -> Optional[tuple]:
    """``benchmarks.onnx_speed --labeled_file ... --json``: per model and runtime its sentences/s
    and, in the same row, its F1 (``torch``, ``torch_f1``, ``ort_int8``, ``ort_int8_f1``, ...).
    That script records no machine, so such a file is a panel of its own."""
    rows = {k: v for k, v in d.items() if isinstance(v, dict)}
    points = []
    for model, row in rows.items():
        for rt, label in RUNTIMES.items():
            if isinstance(row.get(rt), (int, float)) and isinstance(row.get(f"{rt}_f1"), (int, float)):
                kind = "onnx" if rt.startswith("ort") else next(
                    (k for k in ("teacher", "compact") if k in model.lower()), "student")
                points.append(_point(f"{model}, {label}", kind, [row[f"{rt}_f1"]], row[rt], name,
                                     "one model; batch 64, fastest of 3 passes"))
    if not points:
        return None
    return str(d.get("machine") or f"machine not recorded ({name})"), points


def read_points(name: str, d: Dict[str, Any]) -> Optional[tuple]:
    """A file that lists its points itself (``"machine"`` and ``"points"``)."""
    if not isinstance(d.get("points"), list) or "machine" not in d:
        return None
    out = []
    for p in d["points"]:
        f1s = p["f1"] if isinstance(p["f1"], list) else [p["f1"]]
        pt = _point(p["label"], p["kind"], [float(x) for x in f1s], p["sent_per_s"], name, p.get("note", ""))
        if not isinstance(p["f1"], list) and "f1_std" in p:
            pt.update(f1_std=float(p["f1_std"]), n=int(p.get("n", 1)))
        out.append(pt)
    return str(d["machine"]), out


READERS: List[Callable[[str, Dict[str, Any]], Optional[tuple]]] = [read_points, read_peers, read_medium_compact,
                                                                   read_idcnn, read_onnx_speed]


def collect(results_dir: Path) -> "OrderedDict[str, List[Point]]":
    """Machine -> its points, from every results file a reader knows (files in name order)."""
    machines: "OrderedDict[str, List[Point]]" = OrderedDict()
    for path in sorted(Path(results_dir).glob("*.json")):
        d = json.loads(path.read_text(encoding="utf-8"))
        found = next((r for r in (reader(path.name, d) for reader in READERS) if r is not None), None) \
            if isinstance(d, dict) else None
        if found is None:
            logger.info("%s: no F1 and speed of one machine in it; skipped", path.name)
            continue
        machine, points = found
        machines.setdefault(machine, []).extend(points)
    for machine, points in machines.items():  # one label per point of a panel
        seen: Dict[str, int] = {}
        for p in points:
            seen[p["label"]] = seen.get(p["label"], 0) + 1
        for p in points:
            if seen[p["label"]] > 1:
                p["label"] = f"{p['label']} ({Path(p['source']).stem})"
    return OrderedDict((m, ps) for m, ps in machines.items() if ps)


def pareto(points: List[Point]) -> List[Point]:
    """The points no other point beats on both speed and F1, fastest first."""
    front = [p for p in points if not any(q["sent_per_s"] >= p["sent_per_s"] and q["f1"] >= p["f1"]
                                          and (q["sent_per_s"], q["f1"]) != (p["sent_per_s"], p["f1"]) for q in points)]
    return sorted(front, key=lambda p: -p["sent_per_s"])


def _label_offsets(points: List[Point], span: float) -> List[tuple]:
    """Text offsets (points) for the labels: beside each point, or below it when a point already
    labeled sits close by (within 0.15 decades and 15% of the F1 axis, ``span``)."""
    import math

    placed: List[Point] = []
    out: Dict[int, tuple] = {}
    for i in sorted(range(len(points)), key=lambda i: -points[i]["f1"]):  # top down, so moved labels go below
        p = points[i]
        near = sum(abs(math.log10(p["sent_per_s"] / q["sent_per_s"])) < 0.15 and abs(p["f1"] - q["f1"]) < 0.15 * span
                   for q in placed)
        out[i] = (6, 5 - 24 * near)
        placed.append(p)
    return [out[i] for i in range(len(points))]


def draw(machines: "OrderedDict[str, List[Point]]", png: Path, title: str) -> List[Dict[str, Any]]:
    """One panel per machine; log x axis; labeled points; the non-dominated points joined.

    Returns:
        per panel its machine, x scale and axis limits (as drawn).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(machines)
    fig, axes = plt.subplots(1, n, figsize=(7.2 * n, 5.4), squeeze=False)
    panels = []
    for ax, (machine, points) in zip(axes[0], machines.items()):
        front = pareto(points)
        ys = [p["f1"] for p in points]
        offsets = dict(zip(map(id, points), _label_offsets(points, max(ys) - min(ys) + 0.08)))
        ax.plot([p["sent_per_s"] for p in front], [p["f1"] for p in front], "-", color="#bbbbbb", zorder=1,
                label="not dominated")
        for kind in KINDS:
            pts = [p for p in points if p["kind"] == kind]
            if not pts:
                continue
            marker, colour = STYLE[kind]
            ax.errorbar([p["sent_per_s"] for p in pts], [p["f1"] for p in pts], yerr=[p["f1_std"] for p in pts],
                        fmt=marker, color=colour, ms=8, capsize=3, label=kind, zorder=2)
            for p in pts:
                ax.annotate(f"{p['label']}\n{p['f1']:.3f}, {p['sent_per_s']:,.0f}/s", (p["sent_per_s"], p["f1"]),
                            textcoords="offset points", xytext=offsets[id(p)], fontsize=7)
        ax.set_xscale("log")
        xs = [p["sent_per_s"] for p in points]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 3.5)
        ax.set_ylim(min(ys) - 0.04, max(ys) + 0.04)
        ax.set_xlabel("sentences / s at batch 64 (log scale)")
        ax.set_ylabel("test F1 (mean over seeds, ± std)")
        ax.set_title(machine, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        panels.append({"machine": machine, "x_scale": ax.get_xscale(), "x_limits": list(ax.get_xlim()),
                       "y_limits": list(ax.get_ylim()), "points": len(points)})
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return panels


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = parser("frontier", __doc__)
    ap.add_argument("--results_dir", default=str(REPO_ROOT / "docs" / "results"),
                    help="folder of results JSON files (default: docs/results)")
    ap.add_argument("--output", default=str(REPO_ROOT / "docs" / "frontier.png"), help="PNG to write")
    ap.add_argument("--points", default=None,
                    help="JSON of the plotted points to write (default: beside the PNG, NAME_points.json)")
    ap.add_argument("--title", default="WNUT-16 test F1 against speed; each panel one machine, one results file per point")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    machines = collect(Path(args.results_dir))
    if not machines:
        raise SystemExit(f"{args.results_dir}: no results file holds both an F1 and a speed of one machine")
    png = Path(args.output)
    panels = draw(machines, png, args.title)
    out = {"title": args.title, "x": "sentences/s at batch 64", "y": "test F1", "png": png.name,
           "machines": [{**panel, "points": ps, "not_dominated": [p["label"] for p in pareto(ps)]}
                        for panel, ps in zip(panels, machines.values())]}
    points = Path(args.points) if args.points else png.with_name(png.stem + "_points.json")
    points.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for m in out["machines"]:
        print(f"{m['machine']}: {len(m['points'])} points")
        for p in m["points"]:
            print(f"  {p['label']}: F1 {p['f1']:.3f} ± {p['f1_std']:.3f} ({p['n']}), {p['sent_per_s']:,.0f} sent/s "
                  f"[{p['source']}]")
    print(f"wrote {png} and {points}")
    return out


if __name__ == "__main__":
    main()
