"""nlp-serve end to end: a real server process (uvicorn, started by the console script) serving a
tiny random-weight student, called over HTTP; plus the micro-batcher on its own."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from nlp_distill.config import TaggerConfig  # noqa: E402
from nlp_distill.data.conll import read_conll  # noqa: E402
from nlp_distill.data.labels import LabelVocab  # noqa: E402
from nlp_distill.models.neural_tagger import NeuralTagger  # noqa: E402
from nlp_distill.serving import MicroBatcher  # noqa: E402
from tests.conftest import TINY  # noqa: E402

TRAIN = read_conll(TINY / "train.txt")
TEXTS = [" ".join(s.tokens) for s in read_conll(TINY / "test.txt")[:6]] + [
    "Zoë flew to Reykjavík yesterday with Mary Jones!", "", "x"]
LIMITS = {"max_texts": 16, "max_chars": 300, "max_body_bytes": 8000}
WAIT_MS = 300  # long enough for a burst of requests from threads to land in one batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, use_crf=True,
                                            precision="fp32"),
                               TRAIN, LabelVocab.from_sentences(s.tags for s in TRAIN))
    with torch.no_grad():  # decisive CRF transitions: the random student then finds entities
        model.crf.trans.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("serve") / "student"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(student_dir):
    """The URL of `nlp-serve` running on the tiny student (one worker, one torch thread)."""
    port = _free_port()
    script = Path(sys.executable).parent / "nlp-serve"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "procedures.serve"]
    cmd += ["--model_dir", str(student_dir), "--port", str(port), "--threads", "1", "--max_wait_ms", str(WAIT_MS),
            "--max_batch_size", "64", "--log_level", "warning"] + [a for k, v in LIMITS.items() for a in (f"--{k}", str(v))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nlp-serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if _get(url + "/health")["ok"]:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nlp-serve did not answer /health within 60 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def ner(student_dir):
    from nlp_distill import pipeline

    return pipeline(student_dir)


def test_predictions_and_health_equal_the_pipeline(server, ner):
    status, out = _post(server, json.dumps({"texts": TEXTS}).encode())
    assert status == 200, out
    assert out == {"entities": ner(TEXTS)}
    assert sum(map(len, out["entities"])) > 0  # the comparison covers real entities
    health = _get(server + "/health")
    assert health["ok"] is True and health["model_kind"] == ner.model_kind == "NeuralTagger"
    assert health["labels"] == ner.labels
    assert _post(server, b'{"texts": []}') == (200, {"entities": []})


@pytest.mark.parametrize("body, status, message", [
    (b'{"texts": ["a", ', 400, "body is not valid JSON"),
    (b'\xff{"texts": []}', 400, "body is not UTF-8 text"),
    (b'["a", "b"]', 400, 'expected a JSON object {"texts"'),
    (b'{"text": ["a"]}', 400, 'expected a JSON object {"texts"'),
    (b'{"texts": ["a"], "mode": 1}', 400, "unknown field(s) ['mode']"),
    (b'{"texts": "Mary went home"}', 400, "'texts' must be a list of strings, got str"),
    (b'{"texts": ["a", 3]}', 400, "texts[1] must be a string, got int"),
    (json.dumps({"texts": ["a"] * 17}).encode(), 400, "too many texts: 17 > 16"),
    (json.dumps({"texts": ["ok", "a" * 301]}).encode(), 400, "texts[1] is too long: 301 > 300 characters"),
    (json.dumps({"texts": ["word " * 1700]}).encode(), 413, "body too large"),
], ids=["truncated", "not-utf8", "list", "no-texts", "extra-field", "str", "int-item", "too-many", "too-long", "oversized"])
def test_bad_requests_get_a_clear_message(server, body, status, message):
    got, out = _post(server, body)
    assert got == status and message in out["detail"], (got, out)


def test_oversized_body_without_length_is_cut_off(server):
    """A chunked body declares no length: the server counts while reading and stops at the limit."""
    conn = http.client.HTTPConnection(server.split("//")[1], timeout=30)
    chunks = [b'{"texts": ["'] + [b"a" * 1000] * 20 + [b'"]}']
    conn.request("POST", "/predict", body=iter(chunks), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert r.status == 413 and "more than 8000 bytes" in json.loads(r.read())["detail"]
    conn.close()


def test_concurrent_requests_share_model_calls(server, ner):
    before = _get(server + "/metrics")
    n = 12
    results: List[Any] = [None] * n
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        texts = TEXTS[i % len(TEXTS): i % len(TEXTS) + 1 + i % 2]
        barrier.wait()
        results[i] = (texts, _post(server, json.dumps({"texts": texts}).encode()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for texts, (status, out) in results:  # each client gets its own texts' entities, in order
        assert status == 200 and out == {"entities": ner(texts)}
    after = _get(server + "/metrics")
    calls = after["model_calls"] - before["model_calls"]
    assert after["requests"] - before["requests"] == n
    assert 1 <= calls < n, calls  # coalesced: fewer model calls than requests
    assert after["largest_call"] > 2


def _run_batcher(predict, requests: List[List[str]], **kw) -> Tuple[List[Any], MicroBatcher]:
    async def main():
        b = MicroBatcher(predict, **kw)
        await b.start()
        try:
            gathered = asyncio.gather(*(b.submit(r) for r in requests), return_exceptions=True)
            return await asyncio.wait_for(gathered, 10), b  # a lost request fails, not hangs
        finally:
            await b.stop()

    return asyncio.run(main())


def test_batcher_respects_max_batch_size_and_keeps_order():
    calls: List[List[str]] = []

    def predict(texts: List[str]) -> List[List[str]]:
        calls.append(list(texts))
        return [[t.upper()] for t in texts]

    reqs = [["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h" * 2] * 5]
    out, b = _run_batcher(predict, reqs, max_batch_size=4, max_wait_ms=200)
    assert out == [[[t.upper()] for t in r] for r in reqs]
    # a request that does not fit opens the next batch; one larger than the limit runs alone
    assert calls == [["a", "b", "c"], ["d", "e", "f", "g"], ["hh"] * 5]
    assert b.stats.model_calls == 3 and b.stats.largest_call == 5 and b.stats.requests == 5


def test_batcher_failure_reaches_every_request_of_the_batch_only():
    def predict(texts: List[str]) -> List[List[str]]:
        if "boom" in texts:
            raise ValueError("bad text")
        return [[t] for t in texts]

    out, b = _run_batcher(predict, [["x", "boom"], ["y"], ["z"] * 3], max_batch_size=3, max_wait_ms=200)
    assert isinstance(out[0], ValueError) and isinstance(out[1], ValueError)
    assert out[2] == [["z"]] * 3 and b.stats.errors == 1


def test_serve_speed_benchmark_measures_the_server(server):
    from benchmarks.serve_speed import measure, print_table

    texts = TEXTS[:7] * 2  # 14 texts, 3 requests of 6 (the last holds 2)
    rows = measure(int(server.rsplit(":", 1)[1]), texts, request_size=6, clients=[1, 3])
    assert set(rows) == {"1", "3"}
    for r in rows.values():
        assert r["sentences_per_s"] == pytest.approx(len(texts) / r["seconds"])
        assert r["requests_per_s"] == pytest.approx(3 / r["seconds"])
        assert r["texts_per_call"] * r["model_calls"] == pytest.approx(len(texts))
    print_table({"torch": rows})


def test_cli_refuses_a_folder_without_a_model_in_one_line(tmp_path):
    from click.testing import CliRunner

    from procedures.serve import nlp_serve

    r = CliRunner().invoke(nlp_serve, ["--model_dir", str(tmp_path), "--port", "0"])
    assert r.exit_code == 1 and "holds no saved model" in r.output and "Traceback" not in r.output, r.output
