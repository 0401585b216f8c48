"""The spaCy component ``nlp_distill_ner`` with real spaCy 3.8 on tiny saved models: entities equal
the library's own pipeline, snapping to spaCy tokens, plain (POS) tags, long documents, batching,
the to_disk / spacy.load round trip and the errors of a bad config."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install -e .[spacy])")

from nlp_distill.config import TaggerConfig  # noqa: E402
from nlp_distill.data.conll import read_conll  # noqa: E402
from nlp_distill.data.labels import LabelVocab  # noqa: E402
from nlp_distill.data.tokenize import tokenize  # noqa: E402
from nlp_distill.errors import ConfigError  # noqa: E402
from nlp_distill.integrations.spacy import FACTORY, SPACE_TAG, DistillTagger, token_windows  # noqa: E402
from nlp_distill.models.neural_tagger import NeuralTagger  # noqa: E402
from nlp_distill.pipelines import pipeline  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Mary Jones flew to New York with the World Bank team .",
         "nobody expected that today",
         "Met @jo at 5:30 in N.Y.! #NewYork rocks, don't you think?",
         "the meeting in Los Angeles was hosted by World Bank .",
         "Zoë visited Reykjavík",
         ""]
KINDS = ["student", "crf", "compact", "onnx_crf", "teacher"]


def _nlp(model, **cfg):
    nlp = spacy.blank("en")
    nlp.add_pipe(FACTORY, config={"model": str(model), **cfg})
    return nlp


def _ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def _expected_ents(model_dir, text):
    """The library pipeline's entities of ``text`` put on spaCy's tokens (expand, overlaps dropped)."""
    doc = spacy.blank("en")(text)
    spans = [doc.char_span(e["start"], e["end"], label=e["entity_group"], alignment_mode="expand")
             for e in pipeline(model_dir)(text)]
    return [(s.start_char, s.end_char, s.label_) for s in spacy.util.filter_spans(spans)]


@pytest.fixture(scope="module")
def pos_model(tmp_path_factory) -> Path:
    """A tiny random-weight student over the POS fixture's plain tags."""
    train = read_conll(FIXTURES / "pos" / "train.txt")
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, precision="fp32",
                                            use_crf=False), train, LabelVocab.from_sentences(s.tags for s in train))
    with torch.no_grad():
        model.proj.weight.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("pos") / "model"
    model.save_pretrained(folder)
    return folder


class RuleTagger:
    """A stand-in model: a ``B-`` tag for each token listed in ``rules``; records its calls."""

    def __init__(self, rules):
        self.rules, self.calls = rules, []

    def predict(self, sentences, batch_size=64):
        self.calls.append([list(s) for s in sentences])
        return [[f"B-{self.rules[t]}" if t in self.rules else "O" for t in s] for s in sentences]


def _with_stub(stub, **cfg):
    nlp = spacy.blank("en")
    comp = nlp.add_pipe(FACTORY, config={"model": "unused", **cfg})
    comp._model = stub
    return nlp, comp


# ---------------------------------------------------------------- registration and imports

def test_import_nlp_distill_does_not_need_spacy():
    code = ("import sys; sys.modules['spacy'] = None\n"
            "import nlp_distill, nlp_distill.pipelines, nlp_distill.integrations\n"
            "assert callable(nlp_distill.pipeline)\n"
            "try:\n    import nlp_distill.integrations.spacy\nexcept ModuleNotFoundError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pip install 'spacy>=3.8,<3.9'" in r.stdout


def test_the_entry_point_registers_the_factory(model_folders):
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="spacy_factories")}
    assert eps.get(FACTORY) == "nlp_distill.integrations.spacy:make_component", \
        "re-run `pip install -e .` so setup.cfg's spacy_factories entry point is registered"
    code = ("import sys, spacy\n"  # a fresh process: only the entry point can tell spaCy the name
            f"nlp = spacy.blank('en'); p = nlp.add_pipe('{FACTORY}', config={{'model': sys.argv[1]}})\n"
            "print(type(p).__name__, 'nlp_distill.integrations.spacy' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, str(model_folders["student"])], cwd="/", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["DistillTagger", "True"]


# ---------------------------------------------------------------- entities

@pytest.mark.parametrize("kind", KINDS)
def test_ents_are_the_library_pipelines_entities_on_spacy_tokens(kind, model_folders):
    if kind not in model_folders:
        pytest.skip("onnxruntime is not installed")
    folder = model_folders[kind]
    nlp = _nlp(folder)
    found = 0
    for text in TEXTS:
        doc = nlp(text)
        assert _ents(doc) == _expected_ents(folder, text), text
        found += len(doc.ents)
    assert found > 0  # the tiny random models do predict entities
    # where spaCy's tokens are the model's tokens the entities are exactly the library's
    text = TEXTS[0]
    assert _ents(nlp(text)) == [(e["start"], e["end"], e["entity_group"]) for e in pipeline(folder)(text)]


def test_an_entity_boundary_inside_a_spacy_token_grows_to_cover_it():
    text = "I met foo@bar in the co-op and ab;cd"
    assert [t.text for t in spacy.blank("en")(text)] == ["I", "met", "foo@bar", "in", "the", "co", "-", "op", "and", "ab;cd"]
    assert tokenize(text).tokens == ["I", "met", "foo", "@bar", "in", "the", "co-op", "and", "ab", ";", "cd"]
    nlp, _ = _with_stub(RuleTagger({"@bar": "PER", "co-op": "LOC"}))
    assert [(e.text, e.label_) for e in nlp(text).ents] == [("foo@bar", "PER"), ("co-op", "LOC")]
    # two entities inside one spaCy token: both expand to it, one is kept (no overlap error)
    nlp, _ = _with_stub(RuleTagger({"ab": "PER", "cd": "LOC"}))
    assert [(e.text, e.label_) for e in nlp(text).ents] == [("ab;cd", "PER")]


def test_a_plain_tag_model_sets_token_tags(pos_model):
    text = "The old man saw  London ."  # two spaces: a whitespace token
    doc = _nlp(pos_model)(text)
    assert doc.ents == ()
    want = pipeline(pos_model).tag_tokens([tokenize(text).tokens])[0]["tags"]
    words = [t for t in doc if not t.is_space]
    assert [t.tag_ for t in words] == want
    assert [t.tag_ for t in doc if t.is_space] == [SPACE_TAG]
    labels = set(pipeline(pos_model).labels)
    assert {t.tag_ for t in words} <= labels


# ---------------------------------------------------------------- long documents

def test_token_windows_cover_every_token_once():
    toks = "a b c . d e f g h i ! j k l m n o p".split()
    for max_len in (1, 3, 4, 7, 100):
        wins = token_windows(toks, max_len)
        assert [i for a, b in wins for i in range(a, b)] == list(range(len(toks)))
        assert all(0 < b - a <= max_len for a, b in wins)
    assert token_windows(toks, 7) == [(0, 4), (4, 11), (11, 18)]  # cut after "." and "!" in a window's 2nd half
    assert token_windows(toks, 3) == [(0, 3), (3, 6), (6, 9), (9, 11), (11, 14), (14, 17), (17, 18)]
    assert token_windows(toks, 100, breaks=[5, 9]) == [(0, 5), (5, 9), (9, 18)]
    assert token_windows([], 5) == []
    with pytest.raises(ConfigError, match="max_sentence_length 0"):
        token_windows(toks, 0)


def test_a_document_longer_than_a_window_is_tagged_whole(pos_model, model_folders):
    sent = "The old man never saw London ."
    text = " ".join([sent] * 9)  # 63 tokens, windows of at most 10
    toks = tokenize(text).tokens
    wins = token_windows(toks, 10)
    assert len(wins) == 9 and all(b - a <= 10 for a, b in wins)
    doc = _nlp(pos_model, max_sentence_length=10)(text)
    want = [t for r in pipeline(pos_model).tag_tokens([toks[a:b] for a, b in wins]) for t in r["tags"]]
    assert len(doc) == len(toks) and [t.tag_ for t in doc] == want  # every token, the last ones too
    # NER: entities from every window, the last one included
    folder = model_folders["student"]
    long_text = " ".join(TEXTS[:4] * 5)
    toks = tokenize(long_text).tokens
    doc = _nlp(folder, max_sentence_length=12)(long_text)
    spans = tokenize(long_text).spans
    want = []
    for (a, _), r in zip(token_windows(toks, 12), pipeline(folder).tag_tokens([toks[a:b] for a, b in token_windows(toks, 12)])):
        want += [(spans[a + e["token_start"]][0], spans[a + e["token_end"] - 1][1], e["entity_group"]) for e in r["entities"]]
    assert _ents(doc) == want and want[-1][1] > len(long_text) - 60


def test_windows_follow_the_sentences_an_earlier_component_set():
    stub = RuleTagger({})
    nlp, _ = _with_stub(stub, max_sentence_length=4)
    nlp.add_pipe("sentencizer", first=True)
    nlp("One two . Three four five six seven ! Eight")
    assert stub.calls == [[["One", "two", "."], ["Three", "four", "five", "six"], ["seven", "!"], ["Eight"]]]


# ---------------------------------------------------------------- batching

def test_nlp_pipe_makes_one_model_call_per_batch(model_folders):
    nlp = _nlp(model_folders["crf"])
    comp = nlp.get_pipe(FACTORY)
    one_by_one = [_ents(nlp(t)) for t in TEXTS * 2]
    calls = []
    real = comp.predictor.predict
    comp.predictor.predict = lambda sents, batch_size: calls.append(len(sents)) or real(sents, batch_size=batch_size)
    batched = [_ents(d) for d in nlp.pipe(TEXTS * 2, batch_size=5)]
    assert batched == one_by_one
    assert len(calls) == 3  # 12 docs (two of them empty), batches of 5, 5, 2
    assert sum(calls) == 10


def test_a_pickled_component_loads_its_model_again(model_folders):
    import pickle

    for kind in ("crf", "onnx_crf"):
        if kind not in model_folders:
            continue
        nlp = _nlp(model_folders[kind])
        before = [_ents(d) for d in nlp.pipe(TEXTS)]
        copy = pickle.loads(pickle.dumps(nlp.get_pipe(FACTORY)))  # what nlp.pipe(n_process=N) may do
        assert [_ents(copy(spacy.blank("en")(t))) for t in TEXTS] == before


# ---------------------------------------------------------------- saving

@pytest.mark.parametrize("kind", ["student", "compact", "onnx_crf"])
def test_to_disk_then_spacy_load_gives_the_same_ents_without_the_original_folder(kind, model_folders, tmp_path):
    if kind not in model_folders:
        pytest.skip("onnxruntime is not installed")
    own = tmp_path / "run"
    shutil.copytree(model_folders[kind], own / "model")  # a run folder holding model/
    nlp = _nlp(own, batch_size=3)
    before = [_ents(nlp(t)) for t in TEXTS]
    nlp.to_disk(tmp_path / "pipe")
    shutil.rmtree(own)
    loaded = spacy.load(tmp_path / "pipe")
    assert loaded.pipe_names == [FACTORY]
    assert [_ents(d) for d in loaded.pipe(TEXTS)] == before
    assert loaded.get_pipe(FACTORY).batch_size == 3
    loaded.to_disk(tmp_path / "pipe")  # saved again onto itself
    loaded.to_disk(tmp_path / "again")
    assert [_ents(d) for d in spacy.load(tmp_path / "again").pipe(TEXTS)] == before


# ---------------------------------------------------------------- bad configs

def test_a_missing_model_folder_is_one_clear_error(tmp_path, model_folders):
    missing = tmp_path / "no_such_model"
    nlp = _nlp(missing)
    with pytest.raises(ConfigError, match=rf"nlp_distill_ner: model folder {missing} does not exist .*nlp-train"):
        nlp("Mary Jones")
    with pytest.raises(ConfigError, match="does not exist"):
        nlp.initialize()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no saved model"):
        _nlp(tmp_path / "empty")("Mary Jones")
    with pytest.raises(ConfigError, match="backend 'tf'"):
        _nlp(model_folders["student"], backend="tf")
    with pytest.raises(ConfigError, match="max_sentence_length 0"):
        _nlp(model_folders["student"], max_sentence_length=0)
    with pytest.raises(ConfigError, match="no model/ folder"):
        DistillTagger(None, FACTORY, str(model_folders["student"])).from_disk(tmp_path / "empty")


def test_nlp_evaluate_scores_the_entities():
    from spacy.training import Example

    nlp, _ = _with_stub(RuleTagger({"Paris": "LOC"}))
    ref = nlp("I love Paris")
    example = Example(nlp.make_doc("I love Paris"), ref)
    assert nlp.evaluate([example])["ents_f"] == 1.0
