"""Ship an encoder and word vectors to a machine that accepts only small transfers.

A lent GPU machine receives at most 64 MiB per call and has no registry access, while
all-mpnet-base-v2 is 438 MB in fp32 (218 MB in fp16). ``encoder`` stores every 2-D weight as
int8 with one fp16 scale per row (symmetric absmax; other tensors fp16, ~110 MB for MPNet) and
splits the file into parts of at most ``--part_mb``, each in its own folder, so each call carries
one part and the parts stay on the warm machine; ``unpack`` joins them (checking each part's
SHA-256) and writes a plain fp32 HF folder. ``fidelity`` measures what the int8 trip changes
(cosine of the last hidden states against the original on sample sentences). ``glove`` writes the
packaged GloVe 6B 50d restricted to its N most frequent words plus every word of the given data
files, in the package's order, as a text file: ``--embedding_file`` on it gives the student the
same vocabulary and vectors as the packaged file for that data.

    python -m tools.remote_gpu.device_pack encoder mpnet .dev/mpnet --part_mb 56
    python -m tools.remote_gpu.device_pack unpack .dev/mpnet .dev/mpnet_fp32        # on the other machine
    python -m tools.remote_gpu.device_pack fidelity mpnet .dev/mpnet_fp32 --data_file data/wnut16/dev.txt
    python -m tools.remote_gpu.device_pack glove .dev/glove.txt data/wnut16/*.txt
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import torch

META = "pack.json"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt")


def quantize(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """2-D float tensors -> int8 rows + fp16 row scales (``NAME.scale``); the rest -> fp16."""
    out: Dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.float()
        if t.dim() == 2:
            scale = t.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (rows,)
            out[name] = torch.round(t / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[name + ".scale"] = scale.half()
        else:
            out[name] = t.half()
    return out


def dequantize(packed: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`quantize`, in fp32."""
    return {name: (t.float() * packed[name + ".scale"].float()[:, None]) if t.dtype == torch.int8 else t.float()
            for name, t in packed.items() if not name.endswith(".scale")}


def pack_encoder(src: str, out: Path, part_mb: float) -> List[Path]:
    """Quantize ``src`` (HF folder or packaged name) and write ``out_pN/`` part folders."""
    from safetensors.torch import load_file, save

    from nlp_distill.models.packaged_encoders import resolve_encoder
    folder = Path(resolve_encoder(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    blob = save(quantize(load_file(str(folder / "model.safetensors"))))
    step = int(part_mb * 2**20)
    chunks = [blob[i:i + step] for i in range(0, len(blob), step)]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        p = out.parent / f"{out.name}_p{i}"
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir()
        (p / "part.bin").write_bytes(chunk)
        meta = {"index": i, "count": len(chunks), "sha256": hashlib.sha256(chunk).hexdigest(), "source": str(folder)}
        if i == 1:  # the small files travel with the first part
            meta["files"] = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
            for f in meta["files"]:
                shutil.copy(folder / f, p / f)
        (p / META).write_text(json.dumps(meta, indent=1))
        parts.append(p)
    return parts


def unpack(prefix: Path, out: Path) -> Path:
    """Join ``prefix_p1 ... prefix_pK`` (each checked) into an fp32 HF folder ``out``."""
    from safetensors.torch import load, save_file
    first = prefix.parent / f"{prefix.name}_p1"
    if not (first / META).is_file():
        raise SystemExit(f"{first}/{META}: part 1 missing")
    count = json.loads((first / META).read_text())["count"]
    blob = bytearray()
    for i in range(1, count + 1):
        p = prefix.parent / f"{prefix.name}_p{i}"
        if not (p / META).is_file():
            raise SystemExit(f"{p}: part {i} of {count} missing")
        chunk = (p / "part.bin").read_bytes()
        if hashlib.sha256(chunk).hexdigest() != json.loads((p / META).read_text())["sha256"]:
            raise SystemExit(f"{p}/part.bin: damaged (SHA-256 differs)")
        blob += chunk
    out.mkdir(parents=True, exist_ok=True)
    for f in json.loads((first / META).read_text())["files"]:
        shutil.copy(first / f, out / f)
    save_file(dequantize(load(bytes(blob))), str(out / "model.safetensors"))
    return out


def fidelity(src: str, trip: str, data_file: str, n: int = 64) -> Dict[str, float]:
    """Cosine between the original's and the round trip's last hidden states (real tokens)."""
    from transformers import AutoModel, AutoTokenizer

    from nlp_distill.data.conll import read_conll
    from nlp_distill.models.packaged_encoders import resolve_encoder
    texts = [" ".join(s.tokens) for s in read_conll(data_file)[:n]]
    tok = AutoTokenizer.from_pretrained(trip)
    batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    hs = []
    for path in (resolve_encoder(src), trip):
        with torch.no_grad():
            hs.append(AutoModel.from_pretrained(path).eval()(**batch).last_hidden_state)
    mask = batch["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(hs[0], hs[1], dim=-1)[mask]
    return {"sentences": len(texts), "tokens": int(mask.sum()), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


def glove_subset(out: Path, data_files: List[str], top: int = 50000) -> int:
    """Packaged GloVe rows: the ``top`` most frequent words plus every (lowercased) word of the
    data files, in the package's order, as a GloVe text file. Returns the number of rows."""
    from nlp_distill.modules.pretrained import packaged_glove_6b_50d
    words, vecs = packaged_glove_6b_50d()
    wanted = set()
    for f in data_files:
        for line in open(f, encoding="utf-8"):
            wanted.update(w.lower() for w in line.split())
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for i, w in enumerate(words):
            if i < top or w in wanted:
                fh.write(w + " " + " ".join(str(x) for x in vecs[i]) + "\n")  # float32 shortest round trip
                n += 1
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("encoder"); a.add_argument("src"); a.add_argument("out"); a.add_argument("--part_mb", type=float, default=56)
    a = sub.add_parser("unpack"); a.add_argument("prefix"); a.add_argument("out")
    a = sub.add_parser("fidelity"); a.add_argument("src"); a.add_argument("trip"); a.add_argument("--data_file", required=True)
    a = sub.add_parser("glove"); a.add_argument("out"); a.add_argument("data_files", nargs="+"); a.add_argument("--top", type=int, default=50000)
    args = ap.parse_args(argv)
    if args.cmd == "encoder":
        for p in pack_encoder(args.src, Path(args.out), args.part_mb):
            print(p, sum(f.stat().st_size for f in p.iterdir()) / 2**20, "MiB")
    elif args.cmd == "unpack":
        print(unpack(Path(args.prefix), Path(args.out)))
    elif args.cmd == "fidelity":
        print(json.dumps(fidelity(args.src, args.trip, args.data_file)))
    else:
        print(glove_subset(Path(args.out), args.data_files, args.top), "rows")


if __name__ == "__main__":
    sys.exit(main())
