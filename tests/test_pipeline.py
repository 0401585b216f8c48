"""``pipeline(model_dir)`` on every model kind: entities with offsets into the original text,
equal to the spans of the model's own predicted tags, scored by CRF marginals or softmax."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from nlp_distill.data.conll import Sentence, read_conll
from nlp_distill.data.labels import LabelVocab, entity_spans
from nlp_distill.data.tokenize import tokenize
from nlp_distill.models.loader import load_model
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.modules.crf import CRF
from nlp_distill.modules.label_probs import crf_marginals
from tests.conftest import TINY

TRAIN = read_conll(TINY / "train.txt")
LABELS = LabelVocab.from_sentences(s.tags for s in TRAIN)
TEXTS = ["Zoë  Martín works for Red   Cross in New York .", "Mary Jones said Red Cross will open an office in Oslo.",
         " \t leading and trailing spaces  ", "@user loves #NYC http://x.co 😀 !!", "",
         *("  ".join(s.tokens) for s in read_conll(TINY / "test.txt")[:6])]
# folder -> (the torch model folder whose scores it must reproduce, tolerance)
KINDS = {"student": ("student", 1e-5), "crf": ("crf", 1e-5), "compact": ("compact", 1e-5), "teacher": ("teacher", 1e-5),
         "transformer_student": ("transformer_student", 1e-5), "onnx_crf": ("crf", 1e-4),
         "onnx_teacher": ("teacher", 1e-4)}


@pytest.fixture(scope="module")
def folders(model_folders):
    return model_folders


def _folder(folders, kind):
    if kind not in folders:
        pytest.skip("needs onnx and onnxruntime")
    return folders[kind]


def _reference_probs(folder, sents):
    """Label distributions computed here from the torch modules: CRF marginals or softmax."""
    model = load_model(folder)
    if isinstance(model, NeuralTagger):
        batch = model.encode([Sentence(s) for s in sents]).collate(list(range(len(sents))))
        with torch.no_grad():
            em = model(batch)  # (B, L, C)
        probs = model.crf.marginals(em, batch.mask) if model.crf is not None else em.softmax(-1)
        return [p[: len(s)].numpy() for p, s in zip(probs, sents)]
    return [torch.from_numpy(l).softmax(-1).numpy() for l in model.word_logits(sents)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_entities_offsets_and_scores_on_every_model_kind(kind, folders):
    from nlp_distill import pipeline

    ner = pipeline(_folder(folders, kind), batch_size=3)
    assert ner.labels == LABELS.labels and ner.model_kind == type(ner.model).__name__
    tokenized = [tokenize(t) for t in TEXTS]
    own_tags = ner.model.predict([t.tokens for t in tokenized])  # the model's own predictions
    records, plain = ner.tag_texts(TEXTS), ner(TEXTS)
    n_entities = 0
    for text, tok, tags, rec, ents in zip(TEXTS, tokenized, own_tags, records, plain):
        assert rec["tags"] == tags and rec["tokens"] == tok.tokens
        spans = entity_spans(tags)
        assert [(e["entity_group"], e["start"], e["end"]) for e in ents] == [
            (t, tok.spans[a][0], tok.spans[b - 1][1]) for a, b, t in spans]
        for e, (a, b, _) in zip(ents, spans):
            assert set(e) == {"entity_group", "score", "word", "start", "end"}
            assert text[e["start"] : e["end"]] == e["word"] and e["word"].startswith(tok.tokens[a])
            assert 0 < e["score"] <= 1 and e["score"] == pytest.approx(np.mean(rec["scores"][a:b]), abs=1e-7)
        n_entities += len(ents)
    assert n_entities >= 5, "random-weight models tag some entities; none means the test proves nothing"
    source, tol = KINDS[kind]
    real = [t.tokens for t in tokenized if t.tokens]
    ref = _reference_probs(folders[source], real)
    got = [r for r in records if r["tokens"]]
    for r, p in zip(got, ref):
        want = [p[i, LABELS.label2id[t]] for i, t in enumerate(r["tags"])]
        np.testing.assert_allclose(r["scores"], want, atol=tol)
    assert ner("") == [] and ner([]) == []


@pytest.mark.parametrize("kind", ["crf", "teacher", "onnx_crf", "onnx_teacher"])
def test_a_str_where_token_lists_are_expected_is_an_error(kind, folders):
    from nlp_distill import pipeline

    ner = pipeline(_folder(folders, kind))
    for bad in ("Empire State", ["Empire", "State"], ["Empire State"]):
        with pytest.raises(TypeError, match="list of token lists"):
            ner.tag_tokens(bad)
        with pytest.raises(TypeError, match="list of token lists"):
            ner.model.predict(bad)
    with pytest.raises(ValueError, match="holds whitespace"):
        ner.tag_tokens([["Empire State"]])
    with pytest.raises(TypeError, match="tag_tokens"):
        ner([["Empire", "State"]])
    out = ner.tag_tokens([["Empire", "State", "Building"], []])
    assert out[1] == {"tokens": [], "tags": [], "scores": [], "entities": []}
    assert out[0]["tags"] == ner.model.predict([["Empire", "State", "Building"]])[0]
    for e in out[0]["entities"]:
        assert e["start"] is None and e["word"] == " ".join(out[0]["tokens"][e["token_start"] : e["token_end"]])


def test_backend_and_device_mismatches_are_clear_errors(folders):
    from nlp_distill import pipeline
    from nlp_distill.errors import ConfigError

    with pytest.raises(ConfigError, match="not an exported model"):
        pipeline(folders["crf"], backend="onnx")
    with pytest.raises(ConfigError, match="no such folder"):
        pipeline(folders["crf"] / "missing")
    if "onnx_crf" in folders:
        with pytest.raises(ConfigError, match="is an ONNX export"):
            pipeline(folders["onnx_crf"], backend="torch")
        with pytest.raises(ConfigError, match="runs on the CPU"):
            pipeline(folders["onnx_crf"], device="cuda")


def test_one_pipeline_serves_several_threads(folders):
    from nlp_distill import pipeline

    ner = pipeline(folders["crf"])
    want = ner(TEXTS)
    got, errors = [], []

    def work():
        try:
            for _ in range(3):
                got.append(ner(TEXTS))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 12 and all(g == want for g in got)


def test_package_exports_the_function_even_after_the_module_is_imported():
    import nlp_distill.pipelines  # noqa: F401
    from nlp_distill import pipeline

    assert callable(pipeline) and pipeline.__module__ == "nlp_distill.pipelines"


def test_numpy_crf_marginals_equal_the_torch_module():
    torch.manual_seed(1)
    start, trans = LABELS.allowed_transitions()
    crf = CRF(len(LABELS), start, trans, LABELS.allowed_end())
    with torch.no_grad():
        crf.trans.normal_(0, 2.0)
    em = torch.randn(3, 5, len(LABELS)) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    s, t, e = (x.detach().numpy() for x in crf._scores())
    got = crf_marginals(em.numpy(), mask.numpy(), s, t, e)
    np.testing.assert_allclose(got, crf.marginals(em, mask).numpy(), atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), mask.numpy().astype(np.float32), atol=1e-5)


@pytest.mark.parametrize("tags,spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),  # BIO
    (["I-PER", "I-PER", "B-PER", "I-LOC"], [(0, 2, "PER"), (2, 3, "PER"), (3, 4, "LOC")]),  # IOB1
    (["S-PER", "B-ORG", "I-ORG", "E-ORG", "S-ORG"], [(0, 1, "PER"), (1, 4, "ORG"), (4, 5, "ORG")]),  # BIOES
    (["I-PER", "I-PER", "O", "I-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),  # IO
])
def test_entity_spans_read_every_scheme(tags, spans):
    assert entity_spans(tags) == spans


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_reach_the_onnx_session_and_torch(threads, folders):
    from nlp_distill import pipeline

    ner = pipeline(_folder(folders, "onnx_crf"), threads=threads)
    assert ner.model.session.get_session_options().intra_op_num_threads == threads
    before = torch.get_num_threads()
    try:
        pipeline(folders["crf"], threads=threads)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
