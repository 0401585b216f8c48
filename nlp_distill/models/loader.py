"""One loader for every saved model folder, dispatching on the model class it records
(``models.registry.KINDS``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from nlp_distill.errors import ConfigError, ModelFolderError
from nlp_distill.io import read_json
from nlp_distill.models.folders import (NLP_DISTILL_FILE, RESAVE, check_weights, hf_classifier_labels, newer_version_error,
                                        read_model_json)
from nlp_distill.models.registry import KINDS, kind_of_class

TEACHER = KINDS["transformer_token"]
TEACHER_MADE_BY = TEACHER.made_by


def model_class_of(path) -> Tuple[Optional[str], Path]:
    """(saved model class or ``None``, the model folder) for a model folder or a run folder; a HF
    token-classification folder (``hf_classifier_labels``) loads as a ``TransformerTokenClassifier``."""
    p = Path(path)
    for folder in (p, p / "model"):
        if (folder / NLP_DISTILL_FILE).is_file():
            return read_model_json(folder / NLP_DISTILL_FILE).get("model_class", TEACHER.model_class), folder
        if (folder / "config.json").is_file():
            cls = read_model_json(folder / "config.json").get("model_class")
            if kind_of_class(cls) is not None:
                return cls, folder
            if hf_classifier_labels(folder) is not None:
                return TEACHER.model_class, folder
    return None, p


def load_model(path, expect: Optional[str] = None):
    """Load the ``NeuralTagger`` or ``TransformerTokenClassifier`` saved in ``path``.

    This is where every command and ``pipeline`` load a torch model, so a damaged folder is
    reported here once: each weights file's frame is checked before loading (``check_weights``),
    and a file that still fails to load is named with the fix.

    Args:
        expect: the model class the caller needs; a folder holding another kind is a
            ``ConfigError`` saying what it holds and which command makes the expected kind.

    Raises:
        ModelFolderError: a file of the folder is damaged, incomplete, not valid JSON, or written
            by a newer version of the library (the message names the file and the fix).
    """
    if not Path(path).is_dir():
        raise ConfigError(f"{path}: no such folder")
    cls, folder = model_class_of(path)
    if kind_of_class(cls) is None:
        err = newer_version_error(path, f"it records a model class{' ' + cls if cls else ''} this version does not know")
        if err is not None:
            raise err
        raise ConfigError(f"{path} holds no saved model of this library (a student comes from `{KINDS['tagger'].made_by}`, "
                          f"a teacher from `{TEACHER_MADE_BY}` or HF `save_pretrained` of a "
                          "...ForTokenClassification model with id2label in its config.json)")
    if expect is not None and cls != expect:
        made_by = kind_of_class(expect).made_by if kind_of_class(expect) else "?"
        raise ConfigError(f"{path} holds a {cls}, not a {expect}; a {expect} comes from `{made_by}`")
    check_weights(folder)
    try:
        return kind_of_class(cls).load(folder)
    except ModelFolderError:
        raise
    except ConfigError as e:  # config.json holds settings this version does not take
        raise newer_version_error(folder, str(e)) or ModelFolderError(
            f"{folder}: its saved settings do not load ({e}); {RESAVE} with this version") from e
    except FileNotFoundError as e:
        raise ModelFolderError(f"{_missing_file(e)} is missing from the model folder {folder}; {RESAVE}") from e
    except Exception as e:  # noqa: BLE001 - weights that do not unpickle / deserialise / fit the saved settings
        if not _loading_failure(e):
            raise
        raise newer_version_error(folder, _first_line(e)) or ModelFolderError(
            f"{folder} does not load ({type(e).__name__}: {_first_line(e)}): a file is damaged or does not match "
            f"its config.json; {RESAVE}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _loading_failure(e: BaseException) -> bool:
    """Whether ``e``, raised while reading a model folder, means an unreadable or mismatched file
    (safetensors / pickle / JSON errors, state-dict mismatches) rather than a bug."""
    import pickle

    if type(e).__name__ == "SafetensorError" or isinstance(e, (OSError, EOFError, pickle.UnpicklingError, ValueError)):
        return True
    return isinstance(e, RuntimeError) and "state_dict" in str(e)


SEED_FOLDER = re.compile(r"^seed-(-?\d+)$")  # members written by `nlp-train transformer_token --seeds`


def seed_members(path) -> List[Path]:
    """The ``seed-N/`` run folders inside ``path`` (by N), each checked to hold a finished model."""
    p = Path(path)
    found = sorted(((int(m.group(1)), c) for c in p.iterdir() if c.is_dir() and (m := SEED_FOLDER.match(c.name))),
                   key=lambda t: t[0])
    members = []
    for _, folder in found:
        status = read_json(folder / "status.json").get("status") if (folder / "status.json").is_file() else None
        if model_class_of(folder)[0] is None or status not in (None, "finished"):
            raise ConfigError(f"{folder} holds no finished model (status {status or 'unknown'}): finish it with "
                              f"`nlp-train transformer_token --seeds ... --output_dir {p} --resume`, or delete it")
        members.append(folder)
    return members


def expand_model_paths(paths: Sequence) -> List[str]:
    """Model folders for a list of paths: a folder holding a model stays itself; a folder of
    ``seed-N/`` members (``transformer_token --seeds``) becomes all of them, in seed order."""
    out: List[str] = []
    for path in paths:
        if not Path(path).is_dir():
            raise ConfigError(f"{path}: no such folder")
        if model_class_of(path)[0] is not None:
            out.append(str(path))
            continue
        members = seed_members(path)
        if not members:
            raise ConfigError(f"{path} holds neither a saved model nor seed-N/ teacher folders (a teacher comes from "
                              f"`{TEACHER_MADE_BY}`, an ensemble's members from "
                              f"`{TEACHER_MADE_BY} --seeds 1,2,3 --output_dir {path}`)")
        out += [str(m) for m in members]
    return out


def _missing_file(e: FileNotFoundError) -> str:
    """The path a ``FileNotFoundError`` is about: its ``filename``, else the path its message names
    (safetensors says ``No such file or directory: PATH`` with no ``filename``)."""
    if e.filename:
        return str(e.filename)
    text = str(e)
    marker = "No such file or directory: "
    return text.split(marker, 1)[1].strip().strip("'\"") if marker in text else "a file"
