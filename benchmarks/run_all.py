"""The whole story on real data, with the project's own procedures, into one results table.

Teacher (packaged MiniLM) fine-tuned with ``transformer_token``; students (cnn-lstm, id-cnn, +/-
CRF) on gold only, with KD (KL, MSE), with KD + pseudo-labels on unlabeled text; a low-resource
setting (25% of train keeps its tags, 75% becomes unlabeled; the teacher too sees only the 25%).
Then CPU speed/size/memory of one model per row, side by side in one process, and a plot.

    python benchmarks/run_all.py --output_dir results            # full (hours on 2 CPU cores)
    python benchmarks/run_all.py --output_dir results_quick --quick   # < 10 min on 2 CPU cores

Finished runs (a run folder with metrics.json) are reused, so an interrupted benchmark resumes.
Writes ``results.json``, ``results.md`` and ``f1_vs_speed.png`` (needs matplotlib) in OUTPUT_DIR.
"""
from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_distill.config import KDConfig, PseudoConfig, StudentDataConfig, TaggerConfig, TransformerConfig  # noqa: E402
from nlp_distill.data.conll import write_conll  # noqa: E402
from nlp_distill.data.dataset_dir import load_data_dir, materialise_wnut16  # noqa: E402
from nlp_distill.io import read_json, write_json  # noqa: E402
from procedures import tagger as tagger_proc  # noqa: E402
from procedures import tagger_kd, transformer_token  # noqa: E402
from procedures.common import setup_logging  # noqa: E402

logger = logging.getLogger("run_all")


@dataclass
class Plan:
    seeds: int = 3
    archs: List[str] = field(default_factory=lambda: ["cnn-lstm", "cnn-lstm+crf", "id-cnn", "id-cnn+crf"])
    kd_losses: List[str] = field(default_factory=lambda: ["kl", "mse"])
    mse_archs: Optional[List[str]] = None  # archs that also get the MSE row (default: all)
    init_embeddings: Optional[str] = None  # encoder folder for student word vectors (None: random)
    pseudo_archs: Optional[List[str]] = None  # default: all archs
    teacher_epochs: int = 6
    teacher_lr: float = 1e-4
    teacher_batch: int = 16
    student_epochs: int = 20
    patience: int = 5
    unlabeled_max: int = 5000
    subsample: Optional[int] = None  # quick mode: first N train sentences
    low_resource: bool = True
    kd_temp: float = 1.0
    threads: int = 2


def quick_plan() -> Plan:
    return Plan(seeds=1, archs=["cnn-lstm", "id-cnn+crf"], kd_losses=["kl"], teacher_epochs=2, teacher_lr=1e-4,
                student_epochs=3, patience=3, unlabeled_max=300, subsample=300)


def tagger_cfg(arch: str) -> TaggerConfig:
    model_type, _, crf = arch.partition("+")
    return TaggerConfig(model_type=model_type, use_crf=crf == "crf")


def done(run_dir: Path) -> Optional[Dict[str, Any]]:
    f = run_dir / "metrics.json"
    return read_json(f) if f.is_file() else None


def subsampled_dir(src: Path, dst: Path, n: Optional[int], low_resource: bool = False) -> Path:
    """Copy a data dir; optionally keep the first ``n`` train sentences; with ``low_resource``
    keep tags on sentence i of train when i % 4 == 0 (25%) and write the rest, untagged, to
    ``unlabeled_indomain.txt``."""
    if (dst / "train.txt").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    d = load_data_dir(src)
    train = d.train[:n] if n else d.train
    dev = d.dev[: max(n // 3, 20)] if n else d.dev
    test = d.test[: max(n // 3, 20)] if n else d.test
    if low_resource:
        gold = [s for i, s in enumerate(train) if i % 4 == 0]
        rest = [s for i, s in enumerate(train) if i % 4 != 0]
        with open(dst / "unlabeled_indomain.txt", "w", encoding="utf-8") as f:
            for s in rest:
                f.write(" ".join(s.tokens) + "\n")
        train = gold
    write_conll(dst / "train.txt", train)
    write_conll(dst / "dev.txt", dev)
    write_conll(dst / "test.txt", test)
    (dst / "labels.txt").write_text("\n".join(d.labels.labels) + "\n", encoding="utf-8")
    if d.unlabeled_path is not None:
        (dst / "unlabeled.txt").write_text(d.unlabeled_path.read_text(encoding="utf-8"), encoding="utf-8")
    return dst


class Runner:
    def __init__(self, out: Path, plan: Plan, teacher_model: Optional[str]) -> None:
        self.out = out
        self.plan = plan
        self.teacher_model = teacher_model
        self.runs: Dict[str, Dict[str, Any]] = {}

    def teacher(self, name: str, data_dir: Path) -> Path:
        rd = self.out / "runs" / name
        m = done(rd) or transformer_token.do_training(
            data_dir, rd, TransformerConfig(model_name_or_path=self.teacher_model or "", batch_size=self.plan.teacher_batch),
            transformer_token.default_teacher_trainer_config().replace(epochs=self.plan.teacher_epochs, lr=self.plan.teacher_lr,
                                                                       show_progress=False))
        self.runs[name] = {"kind": "teacher", "group": name, "dir": str(rd), "metrics": m}
        return rd

    def student(self, group: str, arch: str, seed: int, data_dir: Path, mode: str, teacher: Optional[Path] = None,
                kd_loss: str = "kl", unlabeled: Optional[Path] = None, patience: Optional[int] = -1) -> None:
        """One student run (skipped when its metrics.json exists). ``patience=-1``: the plan's."""
        name = f"{group}/{arch}/seed{seed}"
        rd = self.out / "runs" / name
        m = done(rd)
        if m is None:
            p = self.plan
            tr = tagger_proc.default_student_trainer_config().replace(epochs=p.student_epochs, early_stopping_patience=p.patience if patience == -1 else patience,
                                                                     seed=seed, show_progress=False)
            tc, dc = tagger_cfg(arch), StudentDataConfig(init_embeddings_from_teacher=p.init_embeddings)
            kd = KDConfig(teacher_model_path=str(teacher), loss_function=kd_loss, temperature=p.kd_temp) if teacher else None
            if mode == "gold":
                m = tagger_proc.do_training(data_dir, rd, tc, tr, dc)
            elif mode == "kd":
                m = tagger_kd.do_kd_training(data_dir, rd, tc, tr, dc, kd)
            else:
                ps = PseudoConfig(unlabeled_filename=str(unlabeled), max_unlabeled=p.unlabeled_max)
                m = tagger_kd.do_kd_pseudo_training(data_dir, rd, tc, tr, dc, kd, ps)
        self.runs[name] = {"kind": "student", "group": f"{group}/{arch}", "setting": group, "arch": arch, "seed": seed,
                           "dir": str(rd), "metrics": m}


def aggregate(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    groups: Dict[str, Dict[str, Any]] = {}
    for name, r in runs.items():
        g = groups.setdefault(r["group"], {"kind": r["kind"], "runs": [], "dir": r["dir"]})
        g["runs"].append(r)
    for gname, g in groups.items():
        f1 = [r["metrics"]["test"]["f1"] for r in g["runs"]]
        dev = [r["metrics"]["dev"]["f1"] for r in g["runs"]]
        m0 = g["runs"][0]["metrics"]
        g.update(test_f1_mean=statistics.mean(f1), test_f1_std=statistics.stdev(f1) if len(f1) > 1 else 0.0,
                 dev_f1_mean=statistics.mean(dev), n_seeds=len(f1), test_f1_all=f1,
                 parameters=m0["parameters"], size_bytes=m0.get("size_bytes"),
                 train_seconds_mean=statistics.mean(r["metrics"]["train_seconds"] for r in g["runs"]))
        if g["kind"] == "teacher":
            g["size_bytes"] = tagger_proc.folder_size(Path(g["dir"]) / "model")
        g["speed_dir"] = g["runs"][0]["dir"]
        del g["runs"]
    return groups


def markdown(groups: Dict[str, Dict[str, Any]], teacher: str, kd_speed: Optional[Dict], env: Dict) -> str:
    t = groups[teacher]
    ts = t.get("speed", {})
    lines = [f"Machine: {env['machine']}, {env['threads']} torch threads, torch {env['torch']}, date {env['date']}.", "",
             "| model | test F1 (mean ± std, n) | params | x fewer params | size MB | sent/s b1 | sent/s b64 | words/s b64 "
             "| x teacher b64 | p50 / p95 ms (b1) | peak RSS MB | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in groups.items():
        s = g.get("speed", {})
        ratio = s.get("sent_per_s_b64", float("nan")) / ts.get("sent_per_s_b64", float("nan")) if ts else float("nan")
        lines.append(
            f"| {name} | {g['test_f1_mean']:.4f} ± {g['test_f1_std']:.4f} ({g['n_seeds']}) | {g['parameters'] / 1e6:.2f}M "
            f"| {t['parameters'] / g['parameters']:.1f} | {g['size_bytes'] / 1e6:.1f} | {s.get('sent_per_s_b1', float('nan')):.0f} "
            f"| {s.get('sent_per_s_b64', float('nan')):.0f} | {s.get('words_per_s_b64', float('nan')):.0f} | {ratio:.1f} "
            f"| {s.get('latency_p50_ms', float('nan')):.1f} / {s.get('latency_p95_ms', float('nan')):.1f} "
            f"| {s.get('peak_rss_mb', float('nan')):.0f} | {g['train_seconds_mean']:.0f} |")
    if kd_speed:
        lines += ["", "KD epoch cost (benchmarks/kd_speed.py, same student and batches, one process):", "",
                  "| mode | epoch s | x plain |", "|---|---|---|"]
        for mode in ("plain", "kd_cached", "kd_teacher_every_step"):
            s = kd_speed[f"{mode}_epoch_s"]
            lines.append(f"| {mode} | {s:.2f} | {s / kd_speed['plain_epoch_s']:.2f} |")
        lines.append(f"| (one-off teacher pass for the cache) | {kd_speed['cache_build_s']:.2f} | |")
    return "\n".join(lines) + "\n"


def plot(groups: Dict[str, Dict[str, Any]], teacher_names: List[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed (pip install -e '.[benchmarks]'): no plot")
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, g in groups.items():
        s = g.get("speed")
        if not s:
            continue
        is_t = name in teacher_names
        ax.errorbar(s["sent_per_s_b64"], g["test_f1_mean"], yerr=g["test_f1_std"], fmt="*" if is_t else "o",
                    ms=14 if is_t else 6, color="crimson" if is_t else ("tab:green" if "low" in name else "tab:blue"), capsize=3)
        ax.annotate(name, (s["sent_per_s_b64"], g["test_f1_mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("CPU throughput, sentences/s at batch 64 (log)")
    ax.set_ylabel("test entity F1 (WNUT-16 split)")
    ax.set_title("F1 vs speed: teacher (star) and students")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output_dir", default="results")
    ap.add_argument("--data_dir", default=None, help="use this data dir instead of materialising WNUT-16")
    ap.add_argument("--teacher_model", default=None, help="encoder folder (default: packaged MiniLM)")
    ap.add_argument("--quick", action="store_true", help="subsample, 1 seed, few epochs (< 10 min on 2 cores)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--archs", default=None, help="comma list, e.g. cnn-lstm,cnn-lstm+crf,id-cnn,id-cnn+crf")
    ap.add_argument("--pseudo_archs", default=None, help="archs for the pseudo-label rows (default: all)")
    ap.add_argument("--kd_losses", default=None)
    ap.add_argument("--mse_archs", default=None, help="archs that also get a KD-MSE row (default: all)")
    ap.add_argument("--init_embeddings", default="encoder",
                    help="student word vectors: 'encoder' (PCA of the teacher encoder's input embeddings, the "
                         "pre-fine-tuning encoder so gold-only baselines get the same start), 'none', or a folder")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--student_epochs", type=int, default=None)
    ap.add_argument("--teacher_epochs", type=int, default=None)
    ap.add_argument("--unlabeled_max", type=int, default=None)
    ap.add_argument("--no_low_resource", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no_speed", action="store_true")
    a = ap.parse_args(argv)
    plan = quick_plan() if a.quick else Plan()
    for k in ("seeds", "student_epochs", "teacher_epochs", "unlabeled_max", "patience"):
        if getattr(a, k) is not None:
            setattr(plan, k, getattr(a, k))
    for k in ("archs", "kd_losses", "pseudo_archs", "mse_archs"):
        if getattr(a, k):
            setattr(plan, k, getattr(a, k).split(","))
    plan.low_resource = not a.no_low_resource
    if a.init_embeddings == "encoder":
        from nlp_distill.models.transformer import default_teacher_path

        plan.init_embeddings = a.teacher_model or default_teacher_path()
    elif a.init_embeddings != "none":
        plan.init_embeddings = a.init_embeddings
    plan.threads = a.threads
    torch.set_num_threads(plan.threads)
    out = Path(a.output_dir)
    setup_logging(out)
    t_all = time.perf_counter()

    base = Path(a.data_dir) if a.data_dir else out / "data" / "wnut16"
    if not a.data_dir and not (base / "train.txt").is_file():
        materialise_wnut16(base, sotu_max_sentences=plan.unlabeled_max)
    data_dir = subsampled_dir(base, out / "data" / "main", plan.subsample)
    unlabeled = data_dir / "unlabeled.txt"
    r = Runner(out, plan, a.teacher_model)
    teacher = r.teacher("teacher", data_dir)
    pseudo_archs = plan.pseudo_archs or plan.archs
    for seed in range(plan.seeds):
        for arch in plan.archs:
            r.student("gold", arch, seed, data_dir, "gold")
            for kl in plan.kd_losses:
                if kl == "mse" and plan.mse_archs is not None and arch not in plan.mse_archs:
                    continue
                r.student(f"kd_{kl}", arch, seed, data_dir, "kd", teacher, kl)
            if arch in pseudo_archs and unlabeled.is_file():
                r.student("kd_pseudo_unlabeled", arch, seed, data_dir, "pseudo", teacher, "kl", unlabeled)
    if plan.low_resource:
        low = subsampled_dir(base, out / "data" / "low25", plan.subsample, low_resource=True)
        t_low = r.teacher("teacher_low25", low)
        for seed in range(plan.seeds):
            for arch in pseudo_archs:
                # no early stopping here: with 25% of the data dev F1 sits at 0 for several epochs
                # before the first entities appear, and patience would end the run before it learns
                r.student("low25_gold", arch, seed, low, "gold", patience=None)
                r.student("low25_kd_pseudo_indomain", arch, seed, low, "pseudo", t_low, "kl", low / "unlabeled_indomain.txt",
                          patience=None)

    groups = aggregate(r.runs)
    kd_speed = None
    if not a.no_speed:
        from benchmarks import kd_speed as kds
        from benchmarks.speed import benchmark_models

        speed = benchmark_models({k: g["speed_dir"] for k, g in groups.items()}, str(data_dir / "test.txt"), plan.threads)
        for k, s in speed.items():
            groups[k]["speed"] = s
        kd_speed = kds.run(data_dir, teacher / "model", threads=plan.threads)
        kds.print_table(kd_speed)
    env = {"machine": platform.processor() or platform.machine(), "threads": plan.threads, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "cpu_count": __import__("os").cpu_count()}
    results = {"plan": plan.__dict__, "environment": env, "groups": groups, "kd_speed": kd_speed,
               "total_seconds": time.perf_counter() - t_all}
    write_json(out / "results.json", results)
    md = markdown(groups, "teacher", kd_speed, env)
    (out / "results.md").write_text(md, encoding="utf-8")
    if not a.no_speed:
        plot(groups, ["teacher", "teacher_low25"], out / "f1_vs_speed.png")
    print(md)
    return results


if __name__ == "__main__":
    main()
