"""What a saved model folder holds, read without loading it (imported by the models themselves
and by the loader, so it imports no model)."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from nlp_distill.errors import ConfigError, ModelFolderError
from nlp_distill.io import LIBRARY_VERSION

NLP_DISTILL_FILE = "nlp_distill.json"  # written by TransformerTokenClassifier.save_pretrained
RESAVE = "copy the model folder again, or save (or export) the model again"
UPGRADE = "upgrade with `pip install -U nlp-distill`"


def read_model_json(path) -> Dict[str, Any]:
    """A model folder's JSON file (``config.json``, ``nlp_distill.json``, ``vocab.json``).

    Raises:
        ModelFolderError: the file is not valid UTF-8 JSON holding an object (named, with the fix).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): the file is "
                               f"damaged or incomplete; {RESAVE}") from None
    except UnicodeDecodeError as e:
        raise ModelFolderError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): the file is damaged; "
                               f"{RESAVE}") from None
    if not isinstance(obj, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(obj).__name__}, not an object: the file is damaged; {RESAVE}")
    return obj


def _version(text: Any) -> Tuple[int, ...]:
    """``"1.2.0rc1"`` -> ``(1, 2, 0)``: the leading numbers of each dotted part."""
    parts = []
    for p in str(text).split("."):
        m = re.match(r"\d+", p)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() < len(p):
            break
    return tuple(parts)


def newer_version(record: Dict[str, Any]) -> Optional[str]:
    """The ``library_version`` a model's JSON records when it is newer than this library, else ``None``."""
    recorded = record.get("library_version")
    return str(recorded) if recorded is not None and _version(recorded) > _version(LIBRARY_VERSION) else None


def model_record(folder) -> Optional[Path]:
    """The JSON file recording a model folder's class and library version (``nlp_distill.json`` of
    a transformer, else ``config.json``), or ``None`` when the folder has neither."""
    for name in (NLP_DISTILL_FILE, "config.json"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def newer_version_error(folder, problem: str) -> Optional[ModelFolderError]:
    """A ``ModelFolderError`` blaming a newer library version for ``problem`` when the record of
    ``folder`` (or of the ``model/`` folder of a run folder) was written by one, else ``None``."""
    records = [r for r in (model_record(folder), model_record(Path(folder) / "model")) if r is not None]
    found = [(r, newer_version(read_model_json(r))) for r in records]
    found = [(r, v) for r, v in found if v is not None]
    if not found:
        return None
    record, version = found[0]
    problem = problem.split("; known:")[0]  # a config's "unknown keys [...]; known: [every key]"
    return ModelFolderError(f"{record} was written by nlp-distill {version}, newer than this one ({LIBRARY_VERSION}), "
                            f"and does not load here ({problem}): {UPGRADE}, or save the model again with "
                            f"{LIBRARY_VERSION}")


def check_safetensors(path) -> None:
    """Check a ``.safetensors`` file's frame without loading it: the 8-byte header length, a JSON
    header, and a data section exactly as long as the header's offsets say.

    Raises:
        ModelFolderError: the file is cut short or damaged (named, with the fix).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if n is None or 8 + n > size:
            raise ModelFolderError(f"{path} is cut short ({size:,} bytes, less than its header): the file is damaged or "
                                   f"incomplete (an interrupted copy?); {RESAVE}")
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ModelFolderError(f"{path} has a damaged header (not a safetensors file?); {RESAVE}") from None
    need = 8 + n + max(ends, default=0)
    if need != size:
        what = "cut short" if size < need else "longer than its header says"
        raise ModelFolderError(f"{path} is {what} ({size:,} bytes, its header needs {need:,}): the file is damaged or "
                               f"incomplete (an interrupted copy?); {RESAVE}")


def check_weights(folder) -> None:
    """``check_safetensors`` on every ``*.safetensors`` file of a model folder."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(path)


def hf_classifier_labels(folder) -> Optional[List[str]]:
    """The labels (``id2label`` in id order) of a HF token-classification folder saved by plain
    ``save_pretrained`` (its config names a ``...ForTokenClassification`` architecture), else
    ``None`` (a bare encoder, or a folder of this library).

    Raises:
        ConfigError: when ``id2label`` does not number its labels 0..n-1.
    """
    cfg_file = Path(folder) / "config.json"
    if (Path(folder) / NLP_DISTILL_FILE).is_file() or not cfg_file.is_file():
        return None
    cfg = read_model_json(cfg_file)
    archs = cfg.get("architectures") or []
    if not isinstance(cfg.get("id2label"), dict) or not any(str(a).endswith("ForTokenClassification") for a in archs):
        return None
    id2label = {str(k): v for k, v in cfg["id2label"].items()}
    if sorted(id2label) != sorted(str(i) for i in range(len(id2label))):
        raise ConfigError(f"{cfg_file}: id2label keys {sorted(id2label)} are not 0..{len(id2label) - 1}")
    return [str(id2label[str(i)]) for i in range(len(id2label))]
