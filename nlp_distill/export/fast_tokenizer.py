"""A saved HF fast tokenizer (``tokenizer.json``) run by the ``tokenizers`` library alone, so an
exported transformer tags text without transformers (and torch) installed.

It offers what ``data.alignment.WordAligner`` calls on a transformers fast tokenizer, with the
same results: transformers' fast tokenizers are this same ``tokenizers.Tokenizer`` underneath,
called with ``is_pretokenized`` for ``is_split_into_words`` and with truncation and padding off.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

from nlp_distill.errors import ConfigError, ModelFolderError
from nlp_distill.models.folders import RESAVE, read_model_json

TOKENIZER_FILE = "tokenizer.json"


class _Encoded:
    """The part of a transformers ``BatchEncoding`` the aligner reads: ``["input_ids"]`` and ``word_ids(i)``."""

    def __init__(self, encodings: List[Any]) -> None:
        self._encodings = encodings

    def __getitem__(self, key: str) -> List[List[int]]:
        if key != "input_ids":
            raise KeyError(key)
        return [e.ids for e in self._encodings]

    def word_ids(self, i: int) -> List[Optional[int]]:
        return list(self._encodings[i].word_ids)


class FastTokenizer:
    """``tokenizer.json`` + ``tokenizer_config.json`` of a folder, callable like a transformers
    fast tokenizer on pre-split words.

    Args:
        folder: a folder written by a transformers fast tokenizer's ``save_pretrained``.

    Raises:
        ConfigError: ``tokenizers`` is not installed.
        ModelFolderError: ``tokenizer.json`` is missing or unreadable.
    """

    is_fast = True

    def __init__(self, folder) -> None:
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError:
            raise ConfigError("an exported transformer needs the tokenizers package: pip install tokenizers") from None
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ModelFolderError(f"{path} is missing (an exported transformer keeps its tokenizer beside model.onnx); "
                                   f"{RESAVE}")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the Rust library raises a plain Exception for a bad file
            raise ModelFolderError(f"{path} is not a readable tokenizer ({str(e).strip()[:200]}): the file is damaged; "
                                   f"{RESAVE}") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        cfg_file = folder / "tokenizer_config.json"
        cfg = read_model_json(cfg_file) if cfg_file.is_file() else {}
        self.unk_token_id = self._special_id(cfg.get("unk_token")) if cfg.get("unk_token") else self._model_unk()
        self.pad_token_id = self._special_id(cfg.get("pad_token"))

    def _special_id(self, token: Any) -> Optional[int]:
        """The id of a special token written as a string or as ``{"content": ...}``."""
        if isinstance(token, dict):
            token = token.get("content")
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    def _model_unk(self) -> Optional[int]:
        unk = getattr(self._tok.model, "unk_token", None)
        return self._tok.token_to_id(unk) if isinstance(unk, str) else getattr(self._tok.model, "unk_id", None)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, batch: Sequence[Sequence[str]], is_split_into_words: bool = True, add_special_tokens: bool = True,
                 verbose: bool = False) -> _Encoded:
        """Encode word lists (``is_split_into_words`` only, the aligner's one use)."""
        if not is_split_into_words:
            raise ValueError("FastTokenizer encodes pre-split words only (is_split_into_words=True)")
        return _Encoded(self._tok.encode_batch([list(s) for s in batch], is_pretokenized=True,
                                               add_special_tokens=add_special_tokens))
