"""Exceptions raised by nlp_distill."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class DataFormatError(ValueError):
    """Malformed input data, located by file and 1-based line number."""

    def __init__(self, path: Union[str, Path, None], line: Optional[int], problem: str) -> None:
        self.path = str(path) if path is not None else "<memory>"
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class LabelMismatchError(ValueError):
    """Two components (e.g. teacher and student) disagree on their label lists."""


class ConfigError(ValueError):
    """An invalid setting: unknown key, wrong type or out-of-range value (names the flag)."""


class ModelFolderError(ConfigError):
    """A file of a saved or exported model folder cannot be used: damaged or incomplete (an
    interrupted copy), not valid JSON, or written by a newer version of the library. The message
    names the file and the fix."""


def framework_hint(missing: str) -> str:
    """One line saying what to install when a torch model meets an environment without ``missing``."""
    return (f"this model needs {missing}, which is not installed here: `pip install torch==2.13.0 transformers` (the "
            "CPU build of torch) adds it; an export from `nlp-export onnx` runs without either")


def missing_framework(e: ImportError) -> Optional[str]:
    """``torch`` or ``transformers`` when that is the import that failed, else ``None``."""
    name = (e.name or "").split(".")[0] or next((m for m in ("torch", "transformers") if m in str(e).split()), "")
    return name if name in ("torch", "transformers") else None
