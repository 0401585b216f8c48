"""Parquet transfer shards: Ray Data labeling equals the single-process store, a job killed midway
leaves whole shards that a rerun keeps, shards read in pandas, the shard metadata is checked, and
stores of the older chunk format still load and convert."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from nlp_distill.config import LabelConfig
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.shards import STORE_FILE, read_shard_meta, shard_name
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.distill.teachers import load_teacher
from nlp_distill.distill.transfer_store import TransferStore, label_block
from nlp_distill.errors import ConfigError
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.option_probe import save_teacher
from tests.test_cli import invoke, ok

DATA = load_data_dir(TINY)
FP16 = dict(rtol=2e-3, atol=2e-3)
S = 5  # sentences per shard: 23 sentences -> 5 shards, the third one across the two input files


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder_dir) -> Path:
    return save_teacher(tmp_path_factory.mktemp("shards") / "teacher", tiny_encoder_dir, DATA.labels)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two raw-text files (13 + 10 sentences) matched by ``part*.txt``."""
    d = tmp_path_factory.mktemp("corpus")
    sents = [" ".join(s.tokens) for s in DATA.train[:23]]
    (d / "part1.txt").write_text("\n".join(sents[:13]) + "\n\n", encoding="utf-8")  # a blank line: no sentence
    (d / "part2.txt").write_text("\n".join(sents[13:]) + "\n", encoding="utf-8")
    return d


def _sentences(corpus: Path):
    return [s.tokens for f in sorted(corpus.glob("part*.txt")) for s in iter_unlabeled(f, "text")]


@pytest.fixture(scope="module")
def reference(teacher_dir, corpus, tmp_path_factory) -> TransferStore:
    """The single-process store of the corpus."""
    return TransferStore.label(load_teacher(str(teacher_dir)), _sentences(corpus),
                               tmp_path_factory.mktemp("ref") / "store", chunk=S, show_progress=False)


def _same_store(a: TransferStore, b: TransferStore) -> None:
    assert len(a) == len(b) and a.key == b.key and a.labels == b.labels
    assert list(a.iter_tokens()) == list(b.iter_tokens())
    for i in range(len(a)):
        np.testing.assert_allclose(a.sentence(i).astype(np.float32), b.sentence(i).astype(np.float32), **FP16)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=2e-3)


# ------------------------------------------------------------------ single process
def test_shards_are_standard_parquet_read_by_pandas_and_pyarrow(reference):
    import pandas as pd

    folder = reference.folder
    assert sorted(p.name for p in folder.iterdir()) == [STORE_FILE] + [shard_name(k) for k in range(5)]
    schema = pq.read_schema(folder / shard_name(2))
    C = len(DATA.labels)
    assert str(schema.field("tokens").type) == "list<element: string>"
    assert str(schema.field("logits").type) == f"list<element: fixed_size_list<element: halffloat>[{C}]>"
    meta = read_shard_meta(folder / shard_name(2))
    assert meta["teacher_fingerprint"] == reference.key and meta["labels"] == DATA.labels.labels
    assert (meta["first_sentence"], meta["num_sentences"]) == (10, 5)
    df = pd.read_parquet(folder / shard_name(2))
    assert list(df.columns) == ["sentence", "tokens", "logits", "confidence"] and list(df.sentence) == list(range(10, 15))
    assert list(df.tokens[0]) == list(reference.iter_tokens())[10]
    np.testing.assert_array_equal(np.stack(df.logits[1]), reference.sentence(11))
    whole = pd.read_parquet(folder)  # the folder: the shards only (``_store.json`` is skipped)
    assert sorted(whole.sentence) == list(range(23))
    assert pads.dataset(folder, format="parquet").count_rows() == 23
    try:
        import datasets
    except ImportError:
        return
    hf = datasets.load_dataset("parquet", data_files=str(folder / "part-*.parquet"), split="train")
    assert hf[11]["tokens"] == list(reference.iter_tokens())[11]


def test_a_shard_of_another_teacher_in_its_place_is_refused(reference, corpus, tiny_encoder_dir, tmp_path):
    """Same sentences, same place, same labels: only the teacher differs, and its fingerprint is checked."""
    teacher2 = save_teacher(tmp_path / "teacher2", tiny_encoder_dir, DATA.labels, seed=1)
    other = TransferStore.label(load_teacher(str(teacher2)), _sentences(corpus), tmp_path / "other", chunk=S,
                                show_progress=False)
    assert other.key != reference.key
    mixed = tmp_path / "mixed"
    shutil.copytree(reference.folder, mixed)
    shutil.copy(other.folder / shard_name(2), mixed / shard_name(2))
    store = TransferStore(mixed)
    np.testing.assert_array_equal(store.sentence(0), reference.sentence(0))
    with pytest.raises(ConfigError, match=r"part-00002.parquet: shard disagrees .*teacher_fingerprint"):
        store.sentence(11)


def test_a_shard_of_another_store_is_refused(reference, teacher_dir, tmp_path):
    """Every shard's schema metadata is checked against ``_store.json`` when it is opened."""
    other = TransferStore.label(load_teacher(str(teacher_dir)), _sentences(TINY_CORPUS(tmp_path))[::-1],
                                tmp_path / "other", chunk=S, show_progress=False)
    mixed = tmp_path / "mixed"
    shutil.copytree(reference.folder, mixed)
    shutil.copy(other.folder / shard_name(1), mixed / shard_name(1))  # same teacher, other sentences 5..9
    shutil.copy(other.folder / shard_name(0), mixed / shard_name(3))  # in the wrong place
    store = TransferStore(mixed)
    np.testing.assert_array_equal(store.sentence(0), reference.sentence(0))
    with pytest.raises(ConfigError, match=r"part-00003.parquet: shard disagrees .*first_sentence"):
        store.sentence(16)


def TINY_CORPUS(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    d.mkdir()
    (d / "part1.txt").write_text("\n".join(" ".join(s.tokens) for s in DATA.train[30:53]) + "\n")
    return d


def test_a_killed_writer_leaves_no_partial_shard(reference, teacher_dir, tmp_path, monkeypatch):
    """A writer killed inside ``pq.write_table`` leaves a hidden temporary file, never a
    ``part-*.parquet``; readers skip it and the rerun removes it."""
    import nlp_distill.data.shards as sh

    sents = list(reference.iter_tokens())
    teacher = load_teacher(str(teacher_dir))
    orig = sh.pq.write_table
    written = []

    def dies_on_third(table, where, **kw):
        if len(written) == 2:
            Path(where).write_bytes(b"PAR1 half a shard")  # the bytes a killed writer leaves
            raise KeyboardInterrupt
        written.append(where)
        return orig(table, where, **kw)

    monkeypatch.setattr(sh.pq, "write_table", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        TransferStore.label(teacher, sents, tmp_path / "s", chunk=S, show_progress=False)
    monkeypatch.setattr(sh.pq, "write_table", orig)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == [STORE_FILE, shard_name(0), shard_name(1)]  # the temporary file went with the writer
    assert pads.dataset(tmp_path / "s", format="parquet").count_rows() == 10
    with pytest.raises(ConfigError, match="unfinished"):
        TransferStore(tmp_path / "s")
    (tmp_path / "s" / f".{shard_name(2)}.123.abc.tmp").write_bytes(b"PAR1 half")  # a hard kill leaves it
    assert pads.dataset(tmp_path / "s", format="parquet").count_rows() == 10  # hidden: not read
    _same_store(TransferStore.label(teacher, sents, tmp_path / "s", chunk=S, show_progress=False), reference)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "s").iterdir())


# ------------------------------------------------------------------ older chunk stores
def _write_chunk_store(teacher, sents, folder: Path, chunk: int) -> None:
    """A store in the older chunk format, as earlier versions wrote it."""
    from nlp_distill.distill.teacher_cache import teacher_fingerprint

    folder.mkdir(parents=True)
    k = 0
    for k, a in enumerate(range(0, len(sents), chunk)):
        block = sents[a : a + chunk]
        flat, lengths, conf = label_block(teacher, block, 8)
        c = folder / f"chunk_{k:05d}"
        c.mkdir()
        flat.astype(np.float16).tofile(c / "logits.f16")
        (c / "tokens.txt").write_text("".join(" ".join(s) + "\n" for s in block), encoding="utf-8")
        np.save(c / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        np.save(c / "confidence.npy", conf)
    (folder / "meta.json").write_text(json.dumps({"key": teacher_fingerprint(teacher), "labels": teacher.labels.labels,
                                                  "chunk": chunk, "complete": True, "num_chunks": k + 1,
                                                  "num_sentences": len(sents)}))


def test_an_older_chunk_store_still_loads_and_converts(reference, teacher_dir, tmp_path):
    teacher = load_teacher(str(teacher_dir))
    sents = list(reference.iter_tokens())
    old = tmp_path / "old"
    _write_chunk_store(teacher, sents, old, S)
    store = TransferStore(old)
    assert store.format == "chunks"
    _same_store(store, reference)
    with pytest.raises(ConfigError, match="convert_store"):  # labeling into it: convert it first
        TransferStore.label(teacher, sents, old, chunk=S, show_progress=False)
    r = ok(invoke(nlp_train, ["convert_store", old, tmp_path / "new"]))
    assert "converted 23 sentences" in r.output
    new = TransferStore(tmp_path / "new")
    assert new.format == "parquet"
    _same_store(new, reference)
    for k in range(5):
        assert pq.read_table(tmp_path / "new" / shard_name(k)).equals(pq.read_table(reference.folder / shard_name(k)))


# ------------------------------------------------------------------ Ray Data
@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs; workers import this repository's ``tests`` package. Skipped
    without ray (pip install 'ray[data]')."""
    ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray[data]")
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


class CountingLoader:
    """Loads the teacher on a Ray worker and records every teacher call (sentences labeled) as a
    file in ``calls``; with ``fail_after``, the worker's call after that many raises (a planted
    fault: the worker dies mid-job)."""

    def __init__(self, teacher_dir: Path, calls: Path, fail_after=None) -> None:
        self.teacher_dir, self.calls, self.fail_after = str(teacher_dir), str(calls), fail_after

    def __call__(self):
        teacher = load_teacher(self.teacher_dir)
        orig, made = teacher.word_logits, []

        def counted(sentences, *a, **kw):
            if self.fail_after is not None and len(made) >= self.fail_after:
                raise RuntimeError("planted fault: the worker dies here")
            made.append(len(sentences))
            Path(self.calls, f"{os.getpid()}-{uuid.uuid4().hex}").write_text(str(len(sentences)))
            return orig(sentences, *a, **kw)

        teacher.word_logits = counted
        return teacher


def _labeled(calls: Path) -> int:
    return sum(int(p.read_text()) for p in calls.iterdir())


def _ray_label(corpus: Path, teacher_dir: Path, folder: Path, load=None, workers: int = 2) -> TransferStore:
    from nlp_distill.engines.ray_label import label_with_ray

    cfg = LabelConfig(teacher_model_path=[str(teacher_dir)], unlabeled_filename=str(corpus / "part*.txt"),
                      chunk_sentences=S, teacher_batch_size=4, workers=workers)
    return label_with_ray(cfg, folder, "cpu", load=load, show_progress=False)


def test_ray_labels_like_one_process_and_a_killed_job_resumes(ray_cluster, teacher_dir, corpus, reference, tmp_path):
    """A Ray job whose only worker dies after one shard leaves whole shards only (equal to the
    single-process ones); the rerun with 2 teacher actors labels only the other shards, and the
    store it finishes is the single-process store."""
    calls = tmp_path / "calls"
    calls.mkdir()
    with pytest.raises(Exception, match="planted fault"):
        _ray_label(corpus, teacher_dir, tmp_path / "s", CountingLoader(teacher_dir, calls, fail_after=1), workers=1)
    kept = sorted(p.name for p in (tmp_path / "s").glob("part-*"))
    assert 1 <= len(kept) < 5 and _labeled(calls) == S * len(kept)
    for name in kept:  # whole shards, equal to the single-process ones
        got, want = pq.read_table(tmp_path / "s" / name), pq.read_table(reference.folder / name)
        assert got.num_rows == S and got.column("tokens").equals(want.column("tokens"))
        np.testing.assert_allclose(np.asarray(got.column("logits").combine_chunks().flatten().flatten(), np.float32),
                                   np.asarray(want.column("logits").combine_chunks().flatten().flatten(), np.float32),
                                   **FP16)
    with pytest.raises(ConfigError, match="unfinished"):
        TransferStore(tmp_path / "s")
    shutil.rmtree(calls)
    calls.mkdir()
    store = _ray_label(corpus, teacher_dir, tmp_path / "s", CountingLoader(teacher_dir, calls))
    assert _labeled(calls) == 23 - S * len(kept)  # the kept shards were not labeled again
    assert store.format == "parquet"
    _same_store(store, reference)
    for k in range(5):
        assert read_shard_meta(store.folder / shard_name(k)) == read_shard_meta(reference.folder / shard_name(k))
    assert json.loads((store.folder / STORE_FILE).read_text()) == json.loads((reference.folder / STORE_FILE).read_text())


def test_label_unlabeled_engine_ray_from_the_cli(ray_cluster, teacher_dir, corpus, reference, tmp_path):
    r = ok(invoke(nlp_train, ["label_unlabeled", "--engine", "ray", "--workers", 1, "--teacher_model_path", teacher_dir,
                              "--unlabeled_filename", f"{corpus / 'part1.txt'},{corpus / 'part2.txt'}",
                              "--chunk_sentences", S, "--max_unlabeled", 12, "--output_dir", tmp_path / "s",
                              "--device", "cpu"]))
    assert "labeled 12 sentences with Ray" in r.output
    store = TransferStore(tmp_path / "s")
    assert list(store.iter_tokens()) == list(reference.iter_tokens())[:12]
    np.testing.assert_allclose(store.sentence(11).astype(np.float32), reference.sentence(11).astype(np.float32), **FP16)
    bad = invoke(nlp_train, ["label_unlabeled", "--workers", 2, "--teacher_model_path", teacher_dir,
                             "--unlabeled_filename", corpus / "part1.txt", "--output_dir", tmp_path / "x"])
    assert bad.exit_code != 0 and "--engine ray" in bad.output


class DiesWritingOnce(CountingLoader):
    """``CountingLoader`` whose worker process is killed (``os._exit``) while it writes shard 0 (a
    full shard of ``S`` sentences, whichever order Ray runs the shards in), once per job (a marker
    file): half a temporary file is left behind."""

    def __call__(self):
        import nlp_distill.data.shards as sh

        teacher = super().__call__()
        orig, marker = sh.pq.write_table, Path(self.calls).parent / "died"

        def dies(table, where, **kw):
            if shard_name(0) in Path(where).name and not marker.exists():
                marker.write_text(str(where))
                Path(where).write_bytes(b"PAR1 half a shard")
                os._exit(1)
            return orig(table, where, **kw)

        sh.pq.write_table = dies  # in this worker process only
        return teacher


def test_a_ray_worker_killed_while_writing_is_restarted_and_its_shard_relabeled(ray_cluster, teacher_dir, corpus,
                                                                                   reference, tmp_path):
    """A hard kill (the process exits mid-write): Ray restarts the actor and retries its shard; the
    job completes, the dead writer's temporary file is removed, the store is the single-process one."""
    calls = tmp_path / "calls"
    calls.mkdir()
    store = _ray_label(corpus, teacher_dir, tmp_path / "s", DiesWritingOnce(teacher_dir, calls), workers=1)
    left = Path((tmp_path / "died").read_text())
    assert left.name.startswith(".part-") and left.name.endswith(".tmp") and not left.exists()
    assert _labeled(calls) == 23 + S  # the killed shard 0 was labeled twice, no other
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [STORE_FILE] + [shard_name(k) for k in range(5)]
    _same_store(store, reference)


@pytest.mark.parametrize("spec", ["folder", "glob", "list"])
def test_the_local_engine_reads_a_folder_a_glob_or_a_list_of_files(reference, teacher_dir, corpus, tmp_path, spec):
    given = {"folder": corpus, "glob": corpus / "part*.txt",
             "list": f"{corpus / 'part1.txt'},{corpus / 'part2.txt'}"}[spec]
    out = tmp_path / "store"
    ok(invoke(nlp_train, ["label_unlabeled", "--teacher_model_path", teacher_dir, "--unlabeled_filename", given,
                          "--output_dir", out, "--chunk_sentences", S, "--teacher_batch_size", 4]))
    _same_store(TransferStore(out), reference)


def test_a_folder_without_text_files_is_one_clear_error(teacher_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke(nlp_train, ["label_unlabeled", "--teacher_model_path", teacher_dir, "--unlabeled_filename",
                           tmp_path / "empty", "--output_dir", tmp_path / "store"])
    assert r.exit_code != 0 and "the folder holds no *.txt file" in r.output
