"""tools/remote_gpu/device_pack: an encoder split into int8 parts joins back into a folder that loads
and computes nearly what the original does; a missing or damaged part is named; the GloVe subset
keeps the most frequent words and every data word, in the vectors' order."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tools.remote_gpu import device_pack
from tests.conftest import TINY


def test_int8_rows_round_trip_within_half_a_step_per_row():
    torch.manual_seed(0)
    state = {"w": torch.randn(7, 33) * torch.logspace(-1, 1, 7)[:, None], "b": torch.randn(5)}
    back = device_pack.dequantize(device_pack.quantize(state))
    step = state["w"].abs().amax(dim=1, keepdim=True) / 127  # one int8 step of each row
    # half a step from rounding, plus the fp16 scale's relative error (2^-11) on the value
    assert torch.all((back["w"] - state["w"]).abs() <= step / 2 + state["w"].abs() * 2**-10 + 1e-7)
    torch.testing.assert_close(back["b"], state["b"].half().float())


def test_parts_join_into_a_working_encoder_and_bad_parts_are_named(tmp_path, tiny_encoder_dir):
    from transformers import AutoModel

    parts = device_pack.pack_encoder(str(tiny_encoder_dir), tmp_path / "enc", part_mb=0.01)
    assert len(parts) >= 2 and all(p.name == f"enc_p{i}" for i, p in enumerate(parts, start=1))
    out = device_pack.unpack(tmp_path / "enc", tmp_path / "joined")
    ids = torch.tensor([[2, 5, 7, 9, 3]])
    with torch.no_grad():
        a = AutoModel.from_pretrained(str(tiny_encoder_dir)).eval()(input_ids=ids).last_hidden_state
        b = AutoModel.from_pretrained(str(out)).eval()(input_ids=ids).last_hidden_state
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99
    damaged = parts[1] / "part.bin"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="enc_p2/part.bin: damaged"):
        device_pack.unpack(tmp_path / "enc", tmp_path / "again")
    shutil.rmtree(parts[1])
    with pytest.raises(SystemExit, match=f"part 2 of {len(parts)} missing"):
        device_pack.unpack(tmp_path / "enc", tmp_path / "again")


def test_glove_subset_keeps_the_top_words_and_the_data_words(tmp_path, monkeypatch):
    words = ["the", "zebra", "of", "tweet", "rare"]
    vecs = np.arange(10, dtype=np.float32).reshape(5, 2) / 3
    monkeypatch.setattr("nlp_distill.modules.pretrained.packaged_glove_6b_50d", lambda: (words, vecs))
    data = tmp_path / "d.txt"
    data.write_text("Rare\tO\nzzz\tO\n", encoding="utf-8")
    assert device_pack.glove_subset(tmp_path / "g.txt", [str(data)], top=2) == 3
    lines = (tmp_path / "g.txt").read_text(encoding="utf-8").splitlines()
    assert [l.split()[0] for l in lines] == ["the", "zebra", "rare"]
    assert np.array_equal(np.array(lines[2].split()[1:], dtype=np.float32), vecs[4])  # exact float32
