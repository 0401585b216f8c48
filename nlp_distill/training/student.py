"""Train a ``NeuralTagger`` student: on gold tags alone (``train_student`` without a distiller) or
distilled from a teacher over a transfer set (``distil_student``: teacher, transfer set, student).

Both write into ``output_dir``: ``model/`` (best on dev), ``metrics.json``, ``train_log.jsonl`` and
``checkpoint/`` (the last epoch, for a resume; delete it once the run is final).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nlp_distill.config import (AugmentConfig, KDConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig,
                                TaggerConfig, TrainerConfig)
from nlp_distill.data.augment import choose_ops
from nlp_distill.data.batching import ConcatEncoded, bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import PLAIN, LabelVocab, entity_spans, is_valid, repair
from nlp_distill.distill.agreement import (AGREEMENT, agreement_scores, heldout_from_sentences, heldout_from_store,
                                           heldout_size, log_agreement, teacher_tagged, warn_without_entities)
from nlp_distill.distill.teacher_features import load_teacher_features
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.distill.teachers import load_teacher, teacher_labels, teacher_scores
from nlp_distill.distill.transfer_set import assemble_transfer_set, check_store_teacher, label_text
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError, DataFormatError, LabelMismatchError
from nlp_distill.io import write_json
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.student import build_student
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.result import LoopResult, TrainResult, final_metrics
from nlp_distill.training.trainer import Trainer
from nlp_distill.utils import distributed as ddp
from nlp_distill.utils.device import pick_device

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def checked_tags(train: Sequence[Sentence], labels: LabelVocab, tagger: TaggerConfig,
                 data: StudentDataConfig) -> List[Sentence]:
    """``train`` with scheme-invalid tag sequences repaired (``data.repair_tags``).

    Raises:
        DataFormatError: an invalid sequence a constrained CRF could not score (the first one's
            line, and the two fixes).
    """
    if labels.scheme in ("IO", "plain"):  # every sequence is valid
        return list(train)
    bad = [s for s in train if s.tags is not None and not is_valid(s.tags, labels.scheme)]
    if bad and data.repair_tags:
        logger.warning("--repair_tags: %d training sentences repaired to valid %s (an orphan I-X starts an X entity)",
                       len(bad), labels.scheme)
        return [Sentence(s.tokens, repair(s.tags, labels.scheme), s.line) if s.tags is not None else s for s in train]
    if bad and tagger.use_crf and tagger.crf_constraints:
        raise DataFormatError(None if bad[0].line is None else "train.txt", bad[0].line,
                              f"{len(bad)} training sentences have tag sequences invalid in {labels.scheme} (e.g. "
                              f"{bad[0].tags[:8]}; IOB1 data?); a constrained CRF cannot score them: pass --repair_tags "
                              "(an orphan I-X starts an X entity) or --no_crf_constraints")
    return list(train)


def _objective(model: NeuralTagger, distiller: Optional[TeacherStudentDistill],
               device: torch.device) -> Tuple[nn.Module, Callable]:
    """(the module the optimiser and the checkpoint hold, ``loss_fn``): gold loss alone, or the
    distiller's combined loss (with its teacher-width projection trained beside the student)."""
    if distiller is None:
        return model, lambda b: model.gold_loss(model(b), b)
    trained: nn.Module = model
    if distiller.uses_hidden:
        trained = nn.ModuleDict({"student": model, "projection": distiller.init_projection(model.encoder.out_dim)})
        trained.to(device)
    return trained, lambda b: (*distiller.loss(model, b), distiller.last_parts)


def _built(tagger: TaggerConfig, data: StudentDataConfig, labels: LabelVocab, vocab_text: Iterable[Sentence],
           distiller: Optional[TeacherStudentDistill], device: torch.device) -> NeuralTagger:
    """A new student on ``device``: vocabularies from ``vocab_text``, initial vectors, and the
    teacher-feature table when ``data`` asks for one (the distiller's teacher computes it)."""
    model = build_student(tagger, data, vocab_text, labels).to(device)
    with ddp.main_first():  # under torchrun rank 0 runs the teacher; the others read its feature cache
        load_teacher_features(model, data, teacher=distiller.teacher if distiller is not None else None,
                              corpus=(s.tokens for s in vocab_text))
    return model


def train_student(*, output_dir: PathLike, train: Sequence[Sentence], dev: Sequence[Sentence], labels: LabelVocab,
                  test: Sequence[Sentence] = (), tagger: TaggerConfig = TaggerConfig(),
                  trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
                  weights: Optional[Sequence[float]] = None, vocab_sentences: Optional[Iterable[Sentence]] = None,
                  distiller: Optional[TeacherStudentDistill] = None, teacher_scores: Optional[Dict[str, Any]] = None,
                  extra: Optional[Callable[[NeuralTagger], Any]] = None, device: Optional[str] = None,
                  resume: bool = False) -> TrainResult:
    """Build, train (best on dev) and score a ``NeuralTagger``: the core of every student run.

    Args:
        output_dir: run folder (``model/``, ``metrics.json``, ``train_log.jsonl``, ``checkpoint/``).
        train: training sentences; tags may be ``None`` (KD only) or the teacher's.
        dev: picks the best epoch; test: scored once, by the best model (may be empty).
        weights: per-sentence loss weights (default 1).
        vocab_sentences: the text the word/char vocabularies come from (default ``train``; never
            dev/test).
        distiller: a ``TeacherStudentDistill`` already ``attach``-ed to ``train`` (see
            ``assemble_transfer_set``); ``None`` trains on gold tags only.
        teacher_scores: the teacher's ``{"dev": ..., "test": ...}`` scores, written beside the
            student's; a student better than its teacher on dev is warned about.
        extra: ``model -> encoded rows`` appended after ``train`` (a transfer store's rows, read from
            disk batch by batch; they need the model's vocabularies).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: cuda when available).
        resume: continue from ``output_dir/checkpoint`` when it exists.
    """
    out, dev_ = Path(output_dir), pick_device(device)
    seed_everything(trainer.seed)
    train = checked_tags(train, labels, tagger, data)
    model = _built(tagger, data, labels, vocab_sentences if vocab_sentences is not None else train, distiller, dev_)
    enc = model.encode(train, weights)
    if extra is not None:
        enc = ConcatEncoded([enc, extra(model)])
    logger.info("student %s%s: %.2fM parameters, vocab %d words / %d chars, %d training sentences",
                tagger.model_type, "+crf" if tagger.use_crf else "", model.num_parameters() / 1e6,
                len(model.word_vocab), len(model.char_vocab), len(enc))

    def batches(epoch: int):
        if distiller is not None:
            distiller.epoch = epoch  # selects the stage of a staged schedule
        return bucket_batches(enc.lengths, data.batch_size, shuffle=True, seed=trainer.seed + epoch)

    trained, loss_fn = _objective(model, distiller, dev_)
    loop = Trainer(model=trained, config=trainer, loss_fn=loss_fn, train_batches=batches,
                   num_batches=len(bucket_batches(enc.lengths, data.batch_size, shuffle=False)),
                   evaluate=lambda: evaluate_split(lambda s: model.predict(s, data.eval_batch_size), dev),
                   save_model=model.save_pretrained, output_dir=out,
                   patience_start=sum(distiller.kd.stages) if distiller is not None else 0,  # not before the last stage
                   collate=lambda idx: enc.collate(idx).to(dev_)).train(resume=resume)
    # rank 0 scores the best model and writes metrics.json
    return _scored(out, loop, dev, test, data, dev_, teacher_scores) if ddp.is_main() else TrainResult(None, {}, out)


def learned_nothing(model: NeuralTagger, dev: Sequence[Sentence], data: StudentDataConfig) -> Optional[str]:
    """A warning when the model tags no entity in the dev text although its reference tags (gold,
    or the teacher's on held-out text) hold some: such a model learned nothing useful. ``None``
    otherwise, and for plain tags (POS)."""
    if model.labels.scheme == PLAIN or not any(entity_spans(s.tags) for s in dev):
        return None
    pred = model.predict([s.tokens for s in dev], data.eval_batch_size)
    if any(entity_spans(p) for p in pred):
        return None
    n = sum(len(entity_spans(s.tags)) for s in dev)
    return (f"the student tags no entity in its {len(dev)} dev sentences, where its reference holds {n}: it learned "
            "nothing useful; train longer (--epochs, --early_stopping_patience 0) or on more text")


def _scored(out: Path, loop: LoopResult, dev: Sequence[Sentence], test: Sequence[Sentence], data: StudentDataConfig,
            device: torch.device, teacher: Optional[Dict[str, Any]]) -> TrainResult:
    """Score the best-on-dev model once on dev and test, beside the teacher's scores; write metrics.json."""
    best = NeuralTagger.from_pretrained(out / "model").to(device)
    secs = loop.epoch_seconds
    metrics = final_metrics(best, lambda s: best.predict(s, data.eval_batch_size), loop, dev, test, out / "model",
                            mean_epoch_seconds=sum(secs) / max(len(secs), 1))
    if teacher is not None:
        metrics["teacher"] = teacher
        if teacher.get("dev") and metrics["dev"]["f1"] > teacher["dev"]["f1"]:  # no gold dev: no teacher dev score
            logger.warning("the student (dev F1 %.4f) beats its teacher (dev F1 %.4f): the teacher is the weaker "
                           "model; train it longer or ensemble several", metrics["dev"]["f1"], teacher["dev"]["f1"])
    empty = learned_nothing(best, dev, data)
    if empty:
        metrics.setdefault("warnings", []).append(empty)
        logger.warning("%s", empty)
    write_json(out / "metrics.json", metrics)
    no_gold_dev = teacher is not None and teacher.get("dev") is None  # dev = the teacher's tags on held-out text
    logger.info("student done: %s %.4f, test F1 %s (best epoch %d, %.0fs)",
                f"{AGREEMENT} on held-out text" if no_gold_dev else "dev F1", metrics["dev"]["f1"],
                f"{metrics['test']['f1']:.4f}" if test else "n/a", loop.best_epoch, loop.train_seconds)
    return TrainResult(best, metrics, out)


def distil_student(*, output_dir: PathLike, train: Sequence[Sentence], dev: Sequence[Sentence], kd: KDConfig,
                   labels: Optional[LabelVocab] = None, test: Sequence[Sentence] = (),
                   tagger: TaggerConfig = TaggerConfig(), trainer: TrainerConfig = StudentTrainerConfig(),
                   data: StudentDataConfig = StudentDataConfig(), augment: AugmentConfig = AugmentConfig(),
                   pseudo: Optional[PseudoConfig] = None, unlabeled: Sequence[Sentence] = (),
                   unlabeled_store: Optional[TransferStore] = None, unlabeled_file: Optional[PathLike] = None,
                   encoding: str = "utf-8", device: Optional[str] = None, resume: bool = False) -> TrainResult:
    """A student distilled from the teacher(s) of ``kd.teacher_model_path``: gold sentences, their
    augmented copies and unlabeled text, every non-gold sentence labeled by the teacher. Without
    gold train the student learns from the labeled text alone; without gold dev the last 5% of
    the text (at least 100 sentences or a fifth of it, at most 1000: ``distill.agreement``) is held out with the teacher's tags
    and picks the epoch, so ``dev`` scores are agreement with the teacher (``metrics["dev_tags"]
    == "teacher"``, and ``metrics["agreement"]``).

    Args:
        output_dir: run folder (as ``train_student``, plus the teacher cache and stores).
        train, dev, test: gold data (``load_data_dir``); labels: the student's (default: the
            teacher's; gold tags must be among them); kd: teachers and loss weights.
        augment: the copies (``copies=0``: none); pseudo: threshold, weight and limit of the text.
        unlabeled: sentences in memory (any loss); unlabeled_store: a ``label_text`` store (logit
            losses only); unlabeled_file: text labeled into ``output_dir/transfer_store`` first.
        encoding, device, resume: of ``unlabeled_file``; as ``train_student``.

    Raises:
        ConfigError: a store of another teacher, an empty file, no text without gold train / dev.
        LabelMismatchError: gold tags outside the teacher's labels (``labels`` not given).
    """
    out = Path(output_dir)
    labels = labels if labels is not None else _teacher_labels_over(kd, {"train": train, "dev": dev, "test": test})
    augment = choose_ops(augment if train else augment.replace(copies=0), len(train))  # copies need gold sentences
    teacher = load_teacher(kd.teacher_model_path, pick_device(device), labels, kd.teacher_max_seq_len)
    train, dev, gold_held = dev_from_train(train, dev)
    pseudo = _pseudo_for(pseudo, unlabeled_file is not None or unlabeled_store is not None or bool(unlabeled),
                         train, dev)
    unlabeled_store = _teacher_store(teacher, unlabeled_store, unlabeled_file, out, pseudo, kd, encoding, trainer)
    gold_dev, held = list(dev), None
    if not dev:  # the teacher's tags on held-out text pick the epoch
        dev, unlabeled, pseudo, held = _held_out_dev(teacher, labels, unlabeled, unlabeled_store, pseudo)
    scores = teacher_scores(teacher, gold_dev, test)
    dist = TeacherStudentDistill(teacher, kd)
    dist.check_labels(labels)  # fail before spending time on the teacher pass
    ts = assemble_transfer_set(distiller=dist, train=train, labels=labels, output_dir=out, augment=augment,
                               unlabeled=unlabeled, pseudo=pseudo, store=unlabeled_store,
                               vocab_from_unlabeled=data.vocab_from_unlabeled or not train,  # no gold words to use
                               show_progress=trainer.show_progress)
    result = train_student(output_dir=out, train=ts.sentences, dev=dev, test=test, labels=labels, tagger=tagger,
                           trainer=trainer, data=data, weights=ts.weights, vocab_sentences=ts.vocab_sentences,
                           distiller=dist, teacher_scores=scores, extra=ts.features(), device=device, resume=resume)
    if (not train or held is not None) and result.metrics:  # text only, or no gold dev: the agreement too
        _add_agreement(result, teacher, held, gold_dev, test, data)
    if gold_held and result.metrics:
        result.metrics["dev_held_out"] = gold_held
        write_json(out / "metrics.json", result.metrics)
    return result


def dev_from_train(train: Sequence[Sentence], dev: Sequence[Sentence]
                   ) -> Tuple[Sequence[Sentence], Sequence[Sentence], Optional[str]]:
    """Gold train without gold dev: the last ``heldout_size`` training sentences become dev (never
    trained on), so the epoch is picked, and dev scored, by gold F1.

    Returns:
        (train, dev, a description of the held-out sentences, or ``None`` when nothing was held out)
    """
    if dev or not train:
        return train, dev, None
    k = heldout_size(len(train))
    if len(train) - k < 1:
        raise ConfigError(f"{len(train)} gold training sentence(s) and no dev.txt: too few to hold some out to pick "
                          "the epoch; add a dev.txt or more sentences")
    held = f"the last {k} of {len(train)} gold training sentences, held out as dev and not trained on"
    logger.info("no dev.txt: %s; the dev F1 is gold F1 on them", held)
    return list(train[:-k]), list(train[-k:]), held


def _pseudo_for(pseudo: Optional[PseudoConfig], has_text: bool, train: Sequence[Sentence],
                dev: Sequence[Sentence]) -> Optional[PseudoConfig]:
    """``pseudo`` (default ``PseudoConfig()``) when there is unlabeled text; without text the run
    needs gold train and dev sentences."""
    if has_text:
        return pseudo or PseudoConfig()
    if not train or not dev:
        raise ConfigError("no gold " + ("training" if not train else "dev") + " sentences and no unlabeled text: give "
                          "unlabeled text for the teacher to label" + ("" if train else " (e.g. DATA_DIR/unlabeled.txt)"))
    return pseudo


def _teacher_store(teacher, store: Optional[TransferStore], path: Optional[PathLike], out: Path,
                   pseudo: PseudoConfig, kd: KDConfig, encoding: str,
                   trainer: TrainerConfig) -> Optional[TransferStore]:
    """``store``, checked to be this teacher's, or the text of ``path`` labeled by the teacher into
    ``out/transfer_store`` (refused when empty); ``None`` without either."""
    if store is None and path is None:
        return None
    if path is not None:
        store = label_text(teacher, path, out / "transfer_store", pseudo.input_format, encoding, pseudo.max_unlabeled,
                           batch_size=kd.teacher_batch_size, show_progress=trainer.show_progress)
        if not len(store):
            raise ConfigError(f"{path}: no unlabeled sentences")
    check_store_teacher(store, teacher)
    return store


def _held_out_dev(teacher, labels: LabelVocab, unlabeled: Sequence[Sentence], store: Optional[TransferStore],
                  pseudo: PseudoConfig) -> Tuple[List[Sentence], Sequence[Sentence], PseudoConfig, str]:
    """Without gold dev: the last unlabeled sentences with the teacher's tags, never trained on.

    Returns:
        (dev sentences, the unlabeled sentences left to train on, ``pseudo`` limited to the store's
        sentences left to train on, a description of the held-out text for logs and metrics)
    """
    if store is not None:
        n = min(len(store), pseudo.max_unlabeled or len(store))
        dev, n_train = heldout_from_store(store, n)
        pseudo = pseudo.replace(max_unlabeled=n_train)
    else:
        n = len(unlabeled)
        dev, unlabeled = heldout_from_sentences(teacher, unlabeled)
    held = f"the last {len(dev)} of {n} unlabeled sentences, held out and not trained on"
    logger.info("no gold dev sentences: the best epoch is picked by %s on %s; every dev score of this run is "
                "that agreement", AGREEMENT, held)
    warn_without_entities(dev, labels)
    return dev, unlabeled, pseudo, held


def _teacher_labels_over(kd: KDConfig, splits: Dict[str, Sequence[Sentence]]) -> LabelVocab:
    """The teacher's labels, which every gold tag of ``splits`` must be among (one line naming
    both sides otherwise, as ``load_data_dir`` checks)."""
    labels = teacher_labels(kd.teacher_model_path)
    used = {t for sents in splits.values() for s in sents for t in (s.tags or ())}
    missing = sorted(used - set(labels.labels))
    if missing:
        where = [name for name, sents in splits.items() if any(t in missing for s in sents for t in (s.tags or ()))]
        raise LabelMismatchError(f"the {'/'.join(where)} tags {missing} are not labels of the teacher (the teacher's "
                                 f"labels not in the data: {[l for l in labels.labels if l not in used] or 'none'})")
    return labels


def _add_agreement(result: TrainResult, teacher, held: Optional[str], gold_dev: Sequence[Sentence],
                   test: Sequence[Sentence], data: StudentDataConfig) -> None:
    """Write the student's agreement with the teacher into ``metrics.json`` (and the log): on the
    held-out text (``held``), else on the gold dev/test text with the teacher's tags."""
    m, best = result.metrics, result.model
    predict = lambda s: best.predict(s, data.eval_batch_size)  # noqa: E731
    if held is not None:
        agree = {**agreement_scores(predict, (), teacher_tagged(teacher, test), held), "dev": m["dev"]}
    else:
        agree = agreement_scores(predict, teacher_tagged(teacher, gold_dev), teacher_tagged(teacher, test),
                                 "the gold dev/test text, tagged by the teacher")
    m.update(dev_tags="gold" if held is None else "teacher", agreement=agree)
    write_json(result.output_dir / "metrics.json", m)
    log_agreement(agree, None if held is not None else m)
