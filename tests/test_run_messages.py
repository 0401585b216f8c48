"""What a run tells its user: progress off a terminal is a few log lines, never carriage-return
bar frames; --no_show_progress also silences the Hugging Face libraries' bars; a failed run's
error is in its run.log; a log line is written once."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nlp_distill.utils import progress as progress_mod
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_progress():
    before = progress_mod.progress_enabled(), os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    yield
    progress_mod._state["enabled"] = before[0]
    if before[1] is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = before[1]
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()


def test_progress_off_a_terminal_logs_a_line_per_tenth(caplog, restore_progress):
    caplog.set_level(logging.INFO, logger="nlp_distill.progress")
    bar = progress_mod.progress(total=1000, desc="labeling", unit="sent")
    for _ in range(100):
        bar.update(10)
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "nlp_distill.progress"]
    assert 9 <= len(lines) <= 11, lines  # 10%, 20%, ..., 90%, and the final line
    assert lines[0].startswith("labeling: 100/1000 sent (10%)") and lines[-1].startswith("labeling: 1000/1000 sent (100%)")
    caplog.clear()
    for _ in progress_mod.progress(range(8), desc="epoch 1/1", log_every=0.25, leave=False):
        pass  # leave=False: the caller logs its own summary line; no 100% line
    assert [r.getMessage()[:22] for r in caplog.records] == ["epoch 1/1: 2/8 it (25%", "epoch 1/1: 4/8 it (50%",
                                                             "epoch 1/1: 6/8 it (75%"]
    caplog.clear()
    progress_mod.set_progress(False)
    for _ in progress_mod.progress(range(50), desc="epoch 1/1"):
        pass
    assert not [r for r in caplog.records if r.name == "nlp_distill.progress"]


def test_no_show_progress_turns_off_the_hf_bars(restore_progress):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    progress_mod.set_progress(False)
    assert not hf_logging.is_progress_bar_enabled()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


@pytest.mark.parametrize("flag", ["--show_progress", "--no_show_progress"])
def test_a_run_with_stderr_in_a_file_has_no_bar_frames(tmp_path, flag):
    """The command as a user runs it, stderr redirected to a file (not a terminal)."""
    err = tmp_path / "stderr.txt"
    code = "import sys; from procedures.cli import nlp_train; sys.argv[0] = 'nlp-train'; nlp_train()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(err, "w") as f:
        rc = subprocess.call([sys.executable, "-c", code, "tagger", "--data_dir", str(TINY), "--output_dir",
                              str(tmp_path / "run"), "--epochs", "2", "--hidden", "8", "--word_embedding_dims", "8",
                              "--embedding_file", "none", "--device", "cpu", "--seed", "1", flag],
                             stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=str(tmp_path), timeout=600)
    text = err.read_text()
    assert rc == 0, text[-2000:]
    assert "\r" not in text, "bar frames written to a file"
    epoch_lines = [ln for ln in text.splitlines() if "nlp_distill.progress: epoch 1/2:" in ln]
    if flag == "--show_progress":
        assert 1 <= len(epoch_lines) <= 3, text[-2000:]  # a line per quarter of the epoch at most
    else:
        assert not epoch_lines


def _train(args):
    from procedures.cli import nlp_train

    return CliRunner().invoke(nlp_train, args)


def test_a_data_error_is_in_run_log(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    with open(data / "train.txt", "a", encoding="utf-8") as f:
        f.write("bad\tline\twith\tcolumns\n\n")
    out = tmp_path / "out"
    res = _train(["tagger", "--data_dir", str(data), "--output_dir", str(out), "--epochs", "1", "--device", "cpu"])
    assert res.exit_code != 0
    log = (out / "run.log").read_text()
    assert "run failed: DataFormatError" in log and "train.txt:" in log, log


def test_a_failed_check_leaves_its_reason_in_run_log(tmp_path):
    out = tmp_path / "out"
    res = _train(["tagger_kd", "--data_dir", str(TINY), "--output_dir", str(out), "--epochs", "1", "--device", "cpu",
                  "--teacher_model_path", str(tmp_path / "no_such_teacher")])
    assert res.exit_code != 0
    log = (out / "run.log").read_text()
    assert "run failed: ConfigError" in log and "no_such_teacher" in log, log
    assert log.count("run failed") == 1


def test_label_augmented_logs_its_augmentation_once(tmp_path, tiny_encoder_dir, caplog):
    from nlp_distill.config import AugmentConfig, TransformerConfig
    from nlp_distill.data.dataset_dir import load_data_dir
    from nlp_distill.distill.transfer_set import label_augmented
    from nlp_distill.models.transformer import TransformerTokenClassifier

    data = load_data_dir(TINY)
    torch.manual_seed(0)
    teacher = TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=data.labels,
                                                         config=TransformerConfig(max_seq_length=32, precision="fp32"))
    caplog.set_level(logging.INFO)
    store = label_augmented(teacher, data.train[:6], AugmentConfig(copies=2, ops=["token", "mention"], seed=3),
                            data.labels.scheme, tmp_path / "aug", batch_size=4, show_progress=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("augmentation:")]
    assert len(lines) == 1, lines
    assert f"augmentation: {len(store)} new sentences" in lines[0]
