"""Data parallelism (torchrun) on CPU with the gloo backend, 2 processes.

The Trainer under 2 ranks must take exactly the optimiser steps of one process accumulating 2
batches; the CLI under torchrun must train a teacher like one process with the same global batch,
and label a transfer store that reads as one single-process store.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nlp_distill.config import TrainerConfig
from nlp_distill.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.unused = nn.Linear(2, 2)  # never gets a gradient: Adam must leave it alone on every rank


def _toy_batches(epoch: int, n_batches: int):
    g = torch.Generator().manual_seed(100 + epoch)
    for i in range(n_batches):
        n = 3 + i % 4  # uneven batch sizes: the step divides by the global item count
        yield torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g), i


def _toy_train(out: Path, accum: int, n_batches: int) -> None:
    torch.manual_seed(0)
    model = Toy()
    cfg = TrainerConfig(epochs=3, lr=0.05, optimizer="adam", grad_accum_steps=accum, max_grad_norm=0.5,
                        early_stopping_patience=0, show_progress=False, seed=0)
    score = iter(range(1000))

    def loss_fn(batch):
        x, y, i = batch
        loss = nn.functional.cross_entropy(model.lin(x), y, reduction="sum")
        parts = {"odd": float(loss.detach())} if i % 2 else {}  # a part only some batches report
        return loss, len(y), parts

    def save(folder: Path) -> None:
        torch.save(model.state_dict(), folder / "weights.pt")

    Trainer(model=model, config=cfg, loss_fn=loss_fn, train_batches=lambda e: _toy_batches(e, n_batches),
            num_batches=n_batches, evaluate=lambda: {"f1": next(score)}, save_model=save, output_dir=out).train()


def _rank_main(rank: int, world: int, port: int, out: str, n_batches: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    _toy_train(Path(out), accum=1, n_batches=n_batches)
    dist.barrier()  # both ranks' files are written
    os._exit(0)  # skip gloo's teardown, which can abort ("terminate called") when the ranks exit together


@pytest.mark.parametrize("n_batches", [10, 9])  # 9: rank 1 runs out one batch early and joins with nothing
def test_two_ranks_take_the_steps_of_one_process_accumulating_two(tmp_path, n_batches):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _toy_train(single, accum=2, n_batches=n_batches)
    mp.spawn(_rank_main, args=(2, _free_port(), str(multi), n_batches), nprocs=2, join=True)
    a = torch.load(single / "model" / "weights.pt")
    b = torch.load(multi / "model" / "weights.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    torch.manual_seed(0)
    init = Toy().state_dict()
    assert torch.equal(b["unused.weight"], init["unused.weight"])  # no gradient anywhere: never stepped
    assert not torch.equal(b["lin.weight"], init["lin.weight"])
    log_a = [json.loads(l) for l in open(single / "train_log.jsonl")]
    log_b = [json.loads(l) for l in open(multi / "train_log.jsonl")]  # written by rank 0 alone
    assert len(log_b) == 3
    for ra, rb in zip(log_a, log_b):  # epoch losses are over all ranks' items, parts included
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert ra["train_odd"] == pytest.approx(rb["train_odd"], rel=1e-5)


def _torchrun(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "procedures.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _two_ranks_equal_one_process(common, accum_flag: str, tmp_path: Path, rel: float) -> list:
    """Run ``nlp-train COMMON`` under torchrun (2 ranks, accumulation 1) and in one process with
    accumulation 2; every epoch's loss (within ``rel``) and dev F1 must agree. Returns the
    2-rank run's train_log records."""
    from click.testing import CliRunner

    from procedures.cli import nlp_train

    res = _torchrun([*common, "--output_dir", str(tmp_path / "ddp"), accum_flag, "1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    one = CliRunner().invoke(nlp_train, [*common, "--output_dir", str(tmp_path / "one"), accum_flag, "2"])
    assert one.exit_code == 0, one.output
    log_d = [json.loads(l) for l in open(tmp_path / "ddp" / "train_log.jsonl")]
    log_1 = [json.loads(l) for l in open(tmp_path / "one" / "train_log.jsonl")]
    assert len(log_d) == len(log_1)
    for a, b in zip(log_d, log_1):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel)
        assert a["dev_f1"] == pytest.approx(b["dev_f1"], abs=1e-6)
    return log_d


def _no_dropout_encoder(src: Path, dst: Path) -> Path:
    """The tiny encoder with dropout off, so ranks and a single process see the same network."""
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_torchrun_teacher_training_matches_one_process_with_the_same_global_batch(tmp_path, tiny_encoder_dir):
    enc = _no_dropout_encoder(tiny_encoder_dir, tmp_path / "enc")
    common = ["transformer_token", "--data_dir", str(TINY), "--model_name_or_path", str(enc), "--device", "cpu",
              "--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--max_seq_length", "32",
              "--learning_rate", "1e-3", "--seed", "3"]
    log_d = _two_ranks_equal_one_process(common, "--gradient_accumulation_steps", tmp_path, rel=1e-3)
    assert [r["epoch"] for r in log_d] == [1, 2]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["environment"]["world_size"] == 2
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["status"] == "finished"


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny_encoder_dir) -> Path:
    from click.testing import CliRunner

    from procedures.cli import nlp_train

    teacher = tmp_path_factory.mktemp("ddp_teacher") / "run"
    r = CliRunner().invoke(nlp_train, ["transformer_token", "--data_dir", str(TINY), "--output_dir", str(teacher),
                                       "--model_name_or_path", str(tiny_encoder_dir), "--device", "cpu",
                                       "--num_train_epochs", "1", "--max_seq_length", "32"])
    assert r.exit_code == 0, r.output
    return teacher


def test_torchrun_student_matches_one_process_and_kd_builds_the_cache_once(tmp_path, tiny_teacher):
    """Gold-only students without dropout: 2 ranks = 1 process accumulating 2 batches. A KD student
    under torchrun finishes, with one teacher cache (rank 0's) and one metrics.json."""
    common = ["tagger", "--data_dir", str(TINY), "--device", "cpu", "--epochs", "2", "--batch_size", "8",
              "--dropout", "0", "--word_dropout", "0", "--use_crf", "--embedding_file", "none", "--seed", "5"]
    _two_ranks_equal_one_process(common, "--grad_accum_steps", tmp_path, rel=1e-4)
    kd = _torchrun(["tagger_kd", "--data_dir", str(TINY), "--device", "cpu", "--epochs", "1", "--augment", "1",
                    "--embedding_file", "none", "--no_crf",
                    "--teacher_model_path", str(tiny_teacher), "--output_dir", str(tmp_path / "kd")], tmp_path)
    assert kd.returncode == 0, kd.stderr[-3000:]
    m = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert m["environment"]["world_size"] == 2 and "teacher" in m
    # one cache, complete, with no second writer's temporary files beside it
    assert sorted(p.name for p in (tmp_path / "kd" / "teacher_cache").iterdir()) == ["logits.f16", "meta.json",
                                                                                    "offsets.npy"]


def test_torchrun_labeling_shards_chunks_into_one_store(tmp_path, tiny_teacher):
    from click.testing import CliRunner

    from nlp_distill.distill.transfer_store import TransferStore
    from procedures.cli import nlp_train

    teacher = tiny_teacher
    text = tmp_path / "unl.txt"
    words = "mary jones visited new york and paris with john smith today".split()
    rng = np.random.default_rng(0)
    text.write_text("".join(" ".join(rng.choice(words, rng.integers(1, 12))) + "\n" for _ in range(53)))
    args = ["label_unlabeled", "--teacher_model_path", str(teacher), "--unlabeled_filename", str(text),
            "--device", "cpu", "--chunk_sentences", "8"]
    res = _torchrun([*args, "--output_dir", str(tmp_path / "ddp")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    one = CliRunner().invoke(nlp_train, [*args, "--output_dir", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    a, b = TransferStore(tmp_path / "ddp"), TransferStore(tmp_path / "one")
    assert len(a) == len(b) == 53
    assert list(a.iter_tokens()) == list(b.iter_tokens())
    for i in range(53):
        np.testing.assert_allclose(a.sentence(i), b.sentence(i), atol=2e-3)


@pytest.mark.parametrize("per_node,gpus,ranks,backend", [
    (2, 2, [0, 1], "nccl"),    # a GPU per process
    (8, 1, [0] * 8, "gloo"),   # 8 labeling processes feeding one GPU: NCCL refuses shared devices
    (4, 2, [0, 1, 0, 1], "gloo"),
])
def test_processes_beyond_the_gpus_share_them_round_robin_over_gloo(monkeypatch, per_node, gpus, ranks, backend):
    from nlp_distill.utils import distributed as ddp

    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(per_node))
    got = []
    for r in range(per_node):
        monkeypatch.setenv("LOCAL_RANK", str(r))
        got.append(ddp.local_cuda_index(gpus))
    assert got == ranks
    assert ddp.backend_for("cuda", gpus) == backend
    assert ddp.backend_for("cpu", 0) == "gloo"
