"""The distillation ablation on real data, with the project's own procedures, into one table.

Teachers (packaged MiniLM) fine-tuned with ``transformer_token``'s defaults, one per seed; their
ensemble; then one student architecture (cnn-lstm+crf by default) trained per seed on gold only
and with each distillation lever added on its own: token KL (the first KD recipe), CRF posterior
KD, + a teacher-labeled augmented transfer set, + the teacher ensemble, the temperature, and
+ pseudo-labels on unlabeled text. A low-resource setting (25% of train keeps its tags, the rest
becomes unlabeled; its teachers see only the 25%) repeats gold vs the full recipe.
Then CPU speed/size/memory of one model per row, side by side in one process, and a plot.

    python -m benchmarks.run_all --output_dir results                 # full (hours on 2 CPU cores)
    python -m benchmarks.run_all --output_dir results_quick --quick   # minutes on 2 CPU cores

Student seed s learns from teacher s (single-teacher rows) or from all teachers (ensemble rows).
Finished runs (a run folder with metrics.json) are reused, so an interrupted benchmark resumes.
Writes ``results.json``, ``results.md`` and ``f1_vs_speed.png`` (needs matplotlib) in OUTPUT_DIR.
"""
from __future__ import annotations

import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from benchmarks.common import THREADS, add_threads, parser, subsampled_dir
from nlp_distill.config import (AugmentConfig, KDConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig,
                                TaggerConfig, TeacherTrainerConfig, TransformerConfig)
from nlp_distill.data.dataset_dir import materialise_wnut16
from nlp_distill.io import folder_size, read_json, write_json
from procedures import tagger as tagger_proc
from procedures import tagger_kd, transformer_token
from procedures.common import RunOptions, setup_logging

KD, AUGMENT, STUDENT, TAGGER = KDConfig(), AugmentConfig(), StudentTrainerConfig(), TaggerConfig()  # library defaults
RUN = RunOptions(overwrite=True)  # a folder without metrics.json holds an interrupted run: redo it

logger = logging.getLogger("run_all")


@dataclass
class Row:
    """One student configuration of the ablation (trained once per seed)."""

    name: str
    mode: str = "kd"  # gold | kd | pseudo
    kd_loss: str = KD.loss_function  # auto = posterior for CRF students
    temperature: float = KD.temperature
    augment: int = 0
    ensemble: bool = False
    unlabeled: str = ""  # pseudo rows: "sotu" (DATA_DIR/unlabeled.txt) or "indomain"
    low: bool = False
    hidden_w: float = KD.hidden_w


def standard_rows(augment: int) -> List[Row]:
    return [Row("gold", mode="gold"), Row("kd_token_kl", kd_loss="kl"), Row("kd_posterior"),
            Row(f"kd_posterior+aug{augment}", augment=augment),
            Row(f"kd_posterior+aug{augment}+ens", augment=augment, ensemble=True),
            Row(f"kd_posterior+aug{augment}+ens_T2", augment=augment, ensemble=True, temperature=2.0),
            Row(f"kd_posterior+aug{augment}+ens+hidden", augment=augment, ensemble=True, hidden_w=1.0),
            Row(f"kd_posterior+aug{augment}+ens+sotu", mode="pseudo", augment=augment, ensemble=True, unlabeled="sotu")]


def low_rows(augment: int) -> List[Row]:
    return [Row("low25_gold", mode="gold", low=True),
            Row(f"low25_kd_posterior+aug{augment}+ens+indomain", mode="pseudo", augment=augment, ensemble=True,
                unlabeled="indomain", low=True)]


@dataclass
class Plan:
    seeds: int = 3
    teachers: int = 3  # teacher seeds (the ensemble has them all)
    arch: str = TAGGER.model_type + ("+crf" if TAGGER.use_crf else "")  # cnn-lstm+crf
    rows: Optional[List[str]] = None  # row names to run (default: all)
    augment: int = AUGMENT.copies
    init_embeddings: Optional[str] = None  # encoder folder for student word vectors (None: random)
    embedding_file: Optional[str] = None  # pretrained word vectors (e.g. glove-6b-50d); replaces init_embeddings
    embedding_vocab: Optional[int] = None  # words of embedding_file added to the vocabulary (None: the library's default)
    word_emb_dim: Optional[int] = None  # None: TaggerConfig's default
    teacher_epochs: Optional[int] = None  # None: transformer_token's default
    student_epochs: int = STUDENT.epochs
    patience: int = STUDENT.early_stopping_patience
    unlabeled_max: int = 2000
    subsample: Optional[int] = None  # quick mode: first N train sentences
    low_resource: bool = True
    threads: int = THREADS
    train: bool = True  # False: only collect finished runs (report)


def quick_plan() -> Plan:
    return Plan(seeds=1, teachers=2, teacher_epochs=2, student_epochs=3, patience=3, unlabeled_max=300, subsample=300,
                augment=1)


def tagger_cfg(arch: str, word_emb_dim: Optional[int] = None) -> TaggerConfig:
    model_type, _, crf = arch.partition("+")
    cfg = TaggerConfig(model_type=model_type, use_crf=crf == "crf")
    return cfg.replace(word_emb_dim=word_emb_dim) if word_emb_dim else cfg


def done(run_dir: Path) -> Optional[Dict[str, Any]]:
    f = run_dir / "metrics.json"
    return read_json(f) if f.is_file() else None


class Runner:
    def __init__(self, out: Path, plan: Plan, teacher_model: Optional[str]) -> None:
        self.out = out
        self.plan = plan
        self.teacher_model = teacher_model
        self.runs: Dict[str, Dict[str, Any]] = {}

    def teacher(self, name: str, data_dir: Path, seed: int) -> Path:
        rd = self.out / "runs" / name
        tr = TeacherTrainerConfig(seed=seed, show_progress=False)
        if self.plan.teacher_epochs:
            tr = tr.replace(epochs=self.plan.teacher_epochs)
        m = done(rd)
        if m is None and not self.plan.train:
            return rd
        m = m or transformer_token.do_training(
            data_dir, rd, TransformerConfig(model_name_or_path=self.teacher_model or ""), tr, RUN)
        self.runs[name] = {"kind": "teacher", "group": name.rsplit("_s", 1)[0], "dir": str(rd), "metrics": m}
        return rd

    def student(self, row: Row, seed: int, data_dir: Path, teachers: List[Path]) -> None:
        """One student run (skipped when its metrics.json exists)."""
        p = self.plan
        name = f"{row.name}/seed{seed}"
        rd = self.out / "runs" / name
        m = done(rd)
        if m is None and not p.train:
            return
        if m is None:
            tr = StudentTrainerConfig(epochs=p.student_epochs, early_stopping_patience=p.patience, seed=seed,
                                      show_progress=False)
            if row.low:  # with 25% of the data dev F1 sits at 0 for several epochs: no early stop
                tr = tr.replace(early_stopping_patience=0)
            tc = tagger_cfg(p.arch, p.word_emb_dim)
            dc = StudentDataConfig(init_embeddings_from_teacher=p.init_embeddings, embedding_file=p.embedding_file)
            if p.embedding_vocab is not None:
                dc = dc.replace(embedding_vocab=p.embedding_vocab)
            if row.mode == "gold":
                m = tagger_proc.do_training(data_dir, rd, tc, tr, dc, RUN)
            else:
                members = teachers if row.ensemble else [teachers[seed % len(teachers)]]
                key = ("+".join(t.name for t in members) + f"-aug{row.augment}-{row.unlabeled or 'none'}"
                       + ("-hidden" if row.hidden_w else ""))
                kd = KDConfig(teacher_model_path=[str(t) for t in members], loss_function=row.kd_loss,
                              temperature=row.temperature, hidden_w=row.hidden_w,
                              cache_dir=str(self.out / "teacher_cache" / key))
                aug = AugmentConfig(copies=row.augment)
                if row.mode == "kd":
                    m = tagger_kd.do_kd_training(data_dir, rd, tc, tr, dc, kd, aug, RUN)
                else:
                    unl = data_dir / ("unlabeled.txt" if row.unlabeled == "sotu" else "unlabeled_indomain.txt")
                    ps = PseudoConfig(unlabeled_filename=str(unl), max_unlabeled=p.unlabeled_max)
                    m = tagger_kd.do_kd_pseudo_training(data_dir, rd, tc, tr, dc, kd, aug, ps, RUN)
        self.runs[name] = {"kind": "student", "group": row.name, "seed": seed, "dir": str(rd), "metrics": m}


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
                 dev_f1_mean=statistics.mean(dev), dev_f1_std=statistics.stdev(dev) if len(dev) > 1 else 0.0,
                 n_seeds=len(f1), test_f1_all=f1,
                 parameters=m0["parameters"], size_bytes=m0.get("size_bytes"),
                 train_seconds_mean=statistics.mean(r["metrics"]["train_seconds"] for r in g["runs"]))
        if g["kind"] == "teacher":
            g["size_bytes"] = folder_size(Path(g["dir"]) / "model")
        ens = [r["metrics"]["teacher"] for r in g["runs"] if (r["metrics"].get("teacher") or {}).get("members", 1) > 1]
        if ens:
            g["ensemble_teacher"] = {"dev_f1": ens[0]["dev"]["f1"], "test_f1": ens[0]["test"]["f1"], "members": ens[0]["members"]}
        g["speed_dir"] = g["runs"][0]["dir"]
        del g["runs"]
    return groups


def markdown(groups: Dict[str, Dict[str, Any]], teacher: str, kd_speed: Optional[Dict], env: Dict) -> str:
    t = groups[teacher]
    ts = t.get("speed", {})
    lines = [f"Machine: {env['machine']}, {env['threads']} torch threads, torch {env['torch']}, date {env['date']}.", "",
             "| model | test F1 (mean ± std, n) | vs gold (pts) | % of teacher | dev F1 | params | size MB | sent/s b64 "
             "| x teacher b64 | p50 / p95 ms (b1) | peak RSS MB | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in groups.items():
        s = g.get("speed", {})
        base = groups.get("low25_gold" if name.startswith("low25") else "gold")
        tch = groups.get("teacher_low25" if name.startswith("low25") else teacher)
        ratio = s.get("sent_per_s_b64", float("nan")) / ts.get("sent_per_s_b64", float("nan")) if ts else float("nan")
        vs_gold = f"{100 * (g['test_f1_mean'] - base['test_f1_mean']):+.1f}" if base and g["kind"] == "student" else ""
        pct = f"{100 * g['test_f1_mean'] / tch['test_f1_mean']:.0f}%" if tch and tch["test_f1_mean"] else ""
        lines.append(
            f"| {name} | {g['test_f1_mean']:.4f} ± {g['test_f1_std']:.4f} ({g['n_seeds']}) | {vs_gold} | {pct} "
            f"| {g['dev_f1_mean']:.3f} ± {g['dev_f1_std']:.3f} "
            f"| {g['parameters'] / 1e6:.2f}M | {(g['size_bytes'] or 0) / 1e6:.1f} "
            f"| {s.get('sent_per_s_b64', float('nan')):.0f} | {ratio:.1f} "
            f"| {s.get('latency_p50_ms', float('nan')):.1f} / {s.get('latency_p95_ms', float('nan')):.1f} "
            f"| {s.get('peak_rss_mb', float('nan')):.0f} | {g['train_seconds_mean']:.0f} |")
    ens = {n: g["ensemble_teacher"] for n, g in groups.items() if "ensemble_teacher" in g}
    if ens:
        lines += ["", "Teacher ensembles (mean of member log-probabilities), scored inside the KD runs:", "",
                  "| used by | members | dev F1 | test F1 |", "|---|---|---|---|"]
        lines += [f"| {n} | {e['members']} | {e['dev_f1']:.4f} | {e['test_f1']:.4f} |" for n, e in ens.items()]
    if kd_speed:
        lines += ["", "KD epoch cost (benchmarks.kd_speed, same student and batches, one process):", "",
                  "| mode | epoch s | x plain |", "|---|---|---|"]
        for mode in ("plain", "kd_cached", "kd_teacher_every_step"):
            sec = kd_speed[f"{mode}_epoch_s"]
            lines.append(f"| {mode} | {sec:.2f} | {sec / kd_speed['plain_epoch_s']:.2f} |")
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
    ap = parser("run_all", __doc__)
    ap.add_argument("--output_dir", default="results")
    ap.add_argument("--data_dir", default=None, help="use this data dir instead of materialising WNUT-16")
    ap.add_argument("--teacher_model", default=None, help="encoder folder (default: packaged MiniLM)")
    ap.add_argument("--quick", action="store_true", help="subsample, 1 seed, few epochs (minutes on 2 cores)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--teachers", type=int, default=None, help="teacher seeds (= ensemble size)")
    ap.add_argument("--arch", default=None, help="student architecture, e.g. cnn-lstm+crf, id-cnn+crf, cnn-lstm")
    ap.add_argument("--rows", default=None, help="comma list of row names to run (default: all)")
    ap.add_argument("--augment", type=int, default=None, help="augmented copies per training sentence")
    ap.add_argument("--init_embeddings", default="encoder",
                    help="student word vectors: 'encoder' (PCA of the teacher encoder's input embeddings, the "
                         "pre-fine-tuning encoder so gold-only baselines get the same start), 'none', or a folder")
    ap.add_argument("--embedding_file", default=None,
                    help="student word vectors from this file or packaged set (glove-6b-50d); replaces --init_embeddings")
    ap.add_argument("--embedding_vocab", type=int, default=None,
                    help="most frequent words of --embedding_file added to the student vocabulary (default: "
                         "StudentDataConfig's)")
    ap.add_argument("--word_emb_dim", type=int, default=None, help="student word vector size (50 for glove-6b-50d)")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--student_epochs", type=int, default=None)
    ap.add_argument("--teacher_epochs", type=int, default=None)
    ap.add_argument("--unlabeled_max", type=int, default=None)
    ap.add_argument("--no_low_resource", action="store_true")
    add_threads(ap)
    ap.add_argument("--no_speed", action="store_true")
    ap.add_argument("--no_train", action="store_true", help="only collect finished runs into the table")
    a = ap.parse_args(argv)
    plan = quick_plan() if a.quick else Plan()
    for k in ("seeds", "teachers", "student_epochs", "teacher_epochs", "unlabeled_max", "patience", "augment", "arch"):
        if getattr(a, k) is not None:
            setattr(plan, k, getattr(a, k))
    if a.rows:
        plan.rows = a.rows.split(",")
    plan.low_resource = not a.no_low_resource
    plan.train = not a.no_train
    plan.embedding_file, plan.embedding_vocab, plan.word_emb_dim = a.embedding_file, a.embedding_vocab, a.word_emb_dim
    if not a.embedding_file and a.init_embeddings != "none":  # pretrained vectors replace any other init
        from nlp_distill.models.transformer import default_teacher_path

        encoder = a.init_embeddings == "encoder"
        plan.init_embeddings = (a.teacher_model or default_teacher_path()) if encoder else a.init_embeddings
    plan.threads = a.threads
    torch.set_num_threads(plan.threads)
    out = Path(a.output_dir)
    setup_logging(out)
    t_all = time.perf_counter()

    base = Path(a.data_dir) if a.data_dir else out / "data" / "wnut16"
    if not a.data_dir and not (base / "train.txt").is_file():
        materialise_wnut16(base, sotu_max_sentences=plan.unlabeled_max)
    data_dir = subsampled_dir(base, out / "data" / "main", plan.subsample)
    r = Runner(out, plan, a.teacher_model)
    wanted = (lambda row: plan.rows is None or row.name in plan.rows)
    rows = list(filter(wanted, standard_rows(plan.augment)))
    # teachers only when a standard row needs them (a low-resource-only run leaves them alone)
    teachers = [r.teacher(f"teacher_s{k + 1}", data_dir, k + 1) for k in range(plan.teachers)] if rows or a.no_train or not plan.rows else []
    for seed in range(plan.seeds):
        for row in rows:
            r.student(row, seed, data_dir, teachers)
    if plan.low_resource:
        low = subsampled_dir(base, out / "data" / "low25", plan.subsample, low_resource=True)
        low_teachers = [r.teacher(f"teacher_low25_s{k + 1}", low, k + 1) for k in range(plan.teachers)]
        for seed in range(plan.seeds):
            for row in filter(wanted, low_rows(plan.augment)):
                r.student(row, seed, low, low_teachers)

    groups = aggregate(r.runs)
    kd_speed = None
    if not a.no_speed:
        from benchmarks import kd_speed as kds
        from benchmarks.speed import benchmark_models

        speed = benchmark_models({k: g["speed_dir"] for k, g in groups.items()}, str(data_dir / "test.txt"), plan.threads)
        for k, s in speed.items():
            groups[k]["speed"] = s
        kd_speed = kds.run(data_dir, teachers[0] / "model", threads=plan.threads) if teachers else None
        kds.print_table(kd_speed)
    env = {"machine": platform.processor() or platform.machine(), "threads": plan.threads, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "cpu_count": __import__("os").cpu_count()}
    results = {"plan": {**plan.__dict__}, "environment": env, "groups": groups, "kd_speed": kd_speed,
               "total_seconds": time.perf_counter() - t_all}
    write_json(out / "results.json", results)
    md = markdown(groups, "teacher" if "teacher" in groups else next(iter(groups)), kd_speed, env)
    (out / "results.md").write_text(md, encoding="utf-8")
    if not a.no_speed:
        plot(groups, ["teacher", "teacher_low25"], out / "f1_vs_speed.png")
    print(md)
    return results


if __name__ == "__main__":
    main()
