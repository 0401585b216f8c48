"""Atomic file and folder writes: every file the library writes appears whole or not at all (a
killed run leaves the old file, or none, and at most a hidden ``.NAME.tmp`` beside it)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional

LIBRARY_VERSION = "0.1.0"


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield the temporary sibling ``.NAME.tmp`` of ``path`` to write; when the block ends without
    an error it replaces ``path`` (``os.replace``), otherwise it is deleted and ``path`` is untouched.
    The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """``open(path, mode)`` through ``atomic_path``: the file is closed, then renamed into place.
    Text modes default to UTF-8."""
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_args) as f:
        yield f


def write_json(path, obj: Any, indent: Optional[int] = 2) -> None:
    """Write JSON atomically (``atomic_path``); ``indent=None``: one line, no spaces."""
    separators = None if indent is not None else (",", ":")
    with atomic_open(path) as f:
        f.write(json.dumps(obj, indent=indent, ensure_ascii=False, separators=separators) + "\n")


def read_json(path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` (old copy removed only
    after the new one is in place), on error it is deleted and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    share_like_umask(tmp)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_umask(root) -> None:
    """Give ``root`` and everything under it the modes a plain ``mkdir`` / ``open`` would have.

    ``mkdtemp`` and ``mkstemp`` create owner-only (0700 / 0600) entries; a model folder moved into
    place from them would be unreadable to a server running as another user.
    """
    mask = current_umask()
    root = Path(root)
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def resolve_model_dir(path) -> Path:
    """Accept a model folder or a run folder holding ``model/``."""
    p = Path(path)
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is neither a saved model folder nor a run folder with model/")
    return p


def folder_size(path) -> int:
    """Bytes of all files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
