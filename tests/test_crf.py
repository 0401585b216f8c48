"""CRF against brute-force enumeration of every tag path on tiny inputs."""
from __future__ import annotations

import itertools
import math

import pytest
import numpy as np
import torch

from nlp_distill.data.labels import LabelVocab, is_valid
from nlp_distill.modules.crf import CRF
from nlp_distill.modules.viterbi import viterbi as numpy_viterbi


def _randomise(crf: CRF, seed: int) -> CRF:
    """Give the CRF non-trivial (not near-zero) transition scores."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        crf.start.copy_(torch.randn(crf.num_tags, generator=g))
        crf.end.copy_(torch.randn(crf.num_tags, generator=g))
        crf.trans.copy_(torch.randn(crf.num_tags, crf.num_tags, generator=g))
    return crf


def _path_score(crf: CRF, em, path) -> float:
    """Naive score of one path with the raw (unpenalised) parameters. em: (n, C) tensor."""
    start, end, trans = crf.start.detach(), crf.end.detach(), crf.trans.detach()
    s = float(start[path[0]]) + float(end[path[-1]])
    for t, y in enumerate(path):
        s += float(em[t, y])
        if t:
            s += float(trans[path[t - 1], y])
    return s


def _allowed(path, start_ok=None, trans_ok=None, end_ok=None) -> bool:
    if start_ok is not None and not start_ok[path[0]]:
        return False
    if end_ok is not None and not end_ok[path[-1]]:
        return False
    if trans_ok is not None and any(not trans_ok[a][b] for a, b in zip(path, path[1:])):
        return False
    return True


def _brute(crf: CRF, em, n: int, allowed=None):
    """(log Z, best path, marginals (n, C), scores dict) over all (allowed) paths of length n."""
    C = crf.num_tags
    allowed = allowed or {}
    scores = {}
    for path in itertools.product(range(C), repeat=n):
        if _allowed(path, **allowed):
            scores[path] = _path_score(crf, em, path)
    vals = list(scores.values())
    m = max(vals)
    logz = m + math.log(sum(math.exp(v - m) for v in vals))
    best = max(scores, key=scores.get)
    marg = torch.zeros(n, C, dtype=torch.float64)
    for path, s in scores.items():
        p = math.exp(s - logz)
        for t, y in enumerate(path):
            marg[t, y] += p
    return logz, list(best), marg, scores


def _batch(C: int, lengths, seed: int, pad_value: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    em = torch.randn(B, L, C, generator=g) * 2
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    tags = torch.randint(0, C, (B, L), generator=g)
    if pad_value:
        huge = (torch.rand(B, L, C, generator=g) * 2 - 1) * pad_value
        em = torch.where(mask.unsqueeze(-1), em, huge)
    return em, mask, tags


CASES = [(3, [4, 2, 1, 3]), (4, [3, 4, 1]), (4, [1, 1]), (3, [2])]


@pytest.mark.parametrize("C,lengths", CASES)
def test_nll_viterbi_marginals_match_brute_force(C, lengths):
    torch.manual_seed(0)
    crf = _randomise(CRF(C), seed=C)
    em, mask, tags = _batch(C, lengths, seed=len(lengths))
    nll = crf.nll(em, tags, mask)
    logz = crf.log_partition(em, mask)
    paths = crf.viterbi(em, mask)
    marg = crf.marginals(em, mask)
    assert nll.shape == (len(lengths),)
    # the torch-free decoder of the ONNX runtime, on garbage padding
    em_np = torch.where(mask.unsqueeze(-1), em, torch.full_like(em, 1e4)).numpy()
    assert numpy_viterbi(em_np, mask.numpy(), *(t.detach().numpy() for t in crf._scores())) == paths
    for b, n in enumerate(lengths):
        bz, best, bmarg, scores = _brute(crf, em[b], n)
        gold = tuple(tags[b, :n].tolist())
        assert logz[b].item() == pytest.approx(bz, abs=1e-4)
        assert nll[b].item() == pytest.approx(bz - scores[gold], abs=1e-4)
        assert crf.path_score(em, tags, mask)[b].item() == pytest.approx(scores[gold], abs=1e-4)
        assert paths[b] == best
        torch.testing.assert_close(marg[b, :n].double(), bmarg, atol=1e-5, rtol=1e-4)
        assert torch.all(marg[b, n:] == 0)
        assert nll[b].item() >= -1e-5  # a probability is at most 1


def test_packed_viterbi_of_many_sentences_matches_brute_force():
    """Rows of 40 sentences (lengths 1-6 in random order, many ties) decoded in one packed
    recursion, torch and numpy, equal brute force per sentence."""
    C = 4
    crf = _randomise(CRF(C), seed=5)
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 7, (40,), generator=g).tolist()
    rows = torch.randn(sum(lengths), C, generator=g)
    paths = crf.viterbi_rows(rows, lengths)
    start, trans, end = (t.detach().numpy() for t in crf._scores())
    em, mask = np.zeros((40, 6, C), np.float32), np.zeros((40, 6), bool)
    for b, piece in enumerate(rows.split(lengths)):
        em[b, : len(piece)], mask[b, : len(piece)] = piece.numpy(), True
    assert numpy_viterbi(em, mask, start, trans, end) == paths
    for piece, path in zip(rows.split(lengths), paths):
        assert tuple(path) == tuple(_brute(crf, piece, len(piece))[1])


@pytest.mark.parametrize("C,lengths", CASES)
def test_batched_equals_per_sentence(C, lengths):
    torch.manual_seed(1)
    crf = _randomise(CRF(C), seed=10 + C)
    em, mask, tags = _batch(C, lengths, seed=7)
    nll = crf.nll(em, tags, mask)
    paths = crf.viterbi(em, mask)
    marg = crf.marginals(em, mask)
    for b, n in enumerate(lengths):
        e1, m1, t1 = em[b : b + 1, :n], mask[b : b + 1, :n], tags[b : b + 1, :n]
        torch.testing.assert_close(crf.nll(e1, t1, m1)[0], nll[b], atol=1e-5, rtol=1e-5)
        assert crf.viterbi(e1, m1)[0] == paths[b]
        assert len(paths[b]) == n
        torch.testing.assert_close(crf.marginals(e1, m1)[0], marg[b, :n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pad_tag", ["minus100", "random"])
def test_padding_values_change_nothing(pad_tag):
    torch.manual_seed(2)
    C, lengths = 4, [4, 1, 2, 3]
    crf = _randomise(CRF(C), seed=3)
    em, mask, tags = _batch(C, lengths, seed=11)
    em_huge, _, _ = _batch(C, lengths, seed=11, pad_value=1e6)
    assert torch.equal(em[mask], em_huge[mask]) and not torch.equal(em, em_huge)
    tags2 = tags.clone()
    if pad_tag == "minus100":
        tags2[~mask] = -100
    else:
        tags2[~mask] = torch.randint(0, C, (int((~mask).sum()),))
    torch.testing.assert_close(crf.nll(em_huge, tags2, mask), crf.nll(em, tags, mask), atol=1e-5, rtol=1e-6)
    assert crf.viterbi(em_huge, mask) == crf.viterbi(em, mask)
    torch.testing.assert_close(crf.marginals(em_huge, mask), crf.marginals(em, mask), atol=1e-6, rtol=1e-6)
    # gradients never reach padded positions
    e = em_huge.clone().requires_grad_(True)
    crf.nll(e, tags2, mask).sum().backward()
    assert torch.isfinite(e.grad).all()
    assert torch.all(e.grad[~mask] == 0)


def _bio_crf(labels: LabelVocab, seed: int) -> CRF:
    start, trans = labels.allowed_transitions()
    return _randomise(CRF(len(labels), start, trans, labels.allowed_end()), seed)


def test_bio_constraints_shape_and_content(tiny_labels):
    start, trans = tiny_labels.allowed_transitions()
    for j, lab in enumerate(tiny_labels.labels):
        assert start[j] == (not lab.startswith("I-"))
        for i, prev in enumerate(tiny_labels.labels):
            ok = not lab.startswith("I-") or prev[2:] == lab[2:] and prev[0] in "BI"
            assert trans[i][j] == ok, (prev, lab)


@pytest.mark.parametrize("label_list,scheme", [
    (None, "BIO"),  # the tiny fixture's labels (PER/LOC/ORG, BIO)
    (["O", "B-X", "I-X"], "BIO"),
    (["B-X", "O", "I-Y", "I-X", "B-Y"], "BIO"),
    (["O", "B-X", "I-X", "E-X", "S-X"], "BIOES"),
])
def test_constrained_viterbi_always_valid(label_list, scheme, tiny_labels):
    torch.manual_seed(3)
    labels = tiny_labels if label_list is None else LabelVocab(label_list)
    assert labels.scheme == scheme
    crf = _bio_crf(labels, seed=5)
    C = len(labels)
    # favour I-/E- tags strongly so unconstrained decoding would often be invalid
    bias = torch.tensor([3.0 if t[0] in "IE" else 0.0 for t in labels.labels])
    lengths = [1 + (i % 8) for i in range(300)]
    g = torch.Generator().manual_seed(9)
    B, L = len(lengths), max(lengths)
    em = torch.randn(B, L, C, generator=g) * 4 + bias
    mask = torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    paths = crf.viterbi(em, mask)
    unconstrained = CRF(C)
    with torch.no_grad():
        unconstrained.start.copy_(crf.start)
        unconstrained.end.copy_(crf.end)
        unconstrained.trans.copy_(crf.trans)
    n_invalid_free = 0
    for b, n in enumerate(lengths):
        assert len(paths[b]) == n
        assert is_valid(labels.decode(paths[b]), scheme), labels.decode(paths[b])
        n_invalid_free += not is_valid(labels.decode(unconstrained.viterbi(em[b : b + 1, :n], mask[b : b + 1, :n])[0]), scheme)
    assert n_invalid_free > 0  # the constraints did real work


@pytest.mark.parametrize("label_list,lengths", [
    (None, [3, 1, 2]),
    (["O", "B-X", "I-X", "B-Y", "I-Y"], [4, 2]),
    (["O", "B-X", "I-X", "E-X", "S-X"], [4, 3, 1]),
])
def test_constrained_matches_brute_force_over_allowed_paths(label_list, lengths, tiny_labels):
    torch.manual_seed(4)
    labels = tiny_labels if label_list is None else LabelVocab(label_list)
    crf = _bio_crf(labels, seed=6)
    C = len(labels)
    start, trans = labels.allowed_transitions()
    allowed = dict(start_ok=start, trans_ok=trans, end_ok=labels.allowed_end())
    em, mask, _ = _batch(C, lengths, seed=13)
    em = em + torch.tensor([2.0 if t[0] in "IE" else 0.0 for t in labels.labels])
    logz = crf.log_partition(em, mask)
    paths = crf.viterbi(em, mask)
    marg = crf.marginals(em, mask)
    gold = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    refs = []
    for b, n in enumerate(lengths):
        bz, best, bmarg, scores = _brute(crf, em[b], n, allowed)
        # a valid, non-optimal gold path
        g = sorted(scores, key=scores.get)[len(scores) // 2]
        gold[b, :n] = torch.tensor(g)
        refs.append((bz, scores[g]))
        assert logz[b].item() == pytest.approx(bz, abs=1e-4)
        assert paths[b] == best
        torch.testing.assert_close(marg[b, :n].double(), bmarg, atol=1e-5, rtol=1e-4)
    nll = crf.nll(em, gold, mask)
    for b, (bz, gs) in enumerate(refs):
        assert nll[b].item() == pytest.approx(bz - gs, abs=1e-4)


def test_gradients_flow_and_are_finite(tiny_labels):
    torch.manual_seed(5)
    for crf in (_randomise(CRF(4), 1), _bio_crf(tiny_labels, 2)):
        C = crf.num_tags
        em, mask, tags = _batch(C, [4, 2, 1], seed=3, pad_value=1e5)
        em = em.requires_grad_(True)
        if crf.num_tags == len(tiny_labels):  # gold path valid under BIO: all O
            assert tiny_labels.labels[0] == "O"
            tags = torch.zeros_like(tags)
        nll = crf.nll(em, tags, mask)
        assert torch.isfinite(nll).all()
        nll.sum().backward()
        assert torch.isfinite(em.grad).all()
        assert em.grad[mask].abs().sum() > 0
        for p in (crf.start, crf.end, crf.trans):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        # d nll / d emissions = marginals - one-hot(gold) on real positions
        onehot = torch.nn.functional.one_hot(tags, C).float() * mask.unsqueeze(-1)
        torch.testing.assert_close(em.grad, crf.marginals(em.detach(), mask) - onehot, atol=1e-5, rtol=1e-4)


def test_length_one_sentences():
    torch.manual_seed(6)
    C = 3
    crf = _randomise(CRF(C), 4)
    em, mask, tags = _batch(C, [1, 1, 1], seed=2)
    assert em.shape[1] == 1
    nll = crf.nll(em, tags, mask)
    paths = crf.viterbi(em, mask)
    marg = crf.marginals(em, mask)
    for b in range(3):
        u = crf.start + em[b, 0] + crf.end  # (C,)
        assert nll[b].item() == pytest.approx((torch.logsumexp(u, 0) - u[tags[b, 0]]).item(), abs=1e-5)
        assert paths[b] == [int(u.argmax())]
        torch.testing.assert_close(marg[b, 0], torch.softmax(u, 0).detach(), atol=1e-6, rtol=1e-5)


def test_constraint_shape_is_checked():
    with pytest.raises(ValueError):
        CRF(3, allowed_start=[True, False])


@pytest.mark.parametrize("C,lengths", CASES)
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_log_marginals_match_brute_force_at_temperature(C, lengths, T):
    """Forward-backward log marginals equal enumeration of p(y) ∝ exp(score(y) / T)."""
    crf = _randomise(CRF(C), seed=C + 1)
    em, mask, _ = _batch(C, lengths, seed=len(lengths) + 7, pad_value=50.0)
    logm = crf.log_marginals(em, mask, T)
    for b, n in enumerate(lengths):
        _, _, _, scores = _brute(crf, em[b], n)
        vals = {p: s / T for p, s in scores.items()}
        m = max(vals.values())
        logz = m + math.log(sum(math.exp(v - m) for v in vals.values()))
        ref = torch.zeros(n, C, dtype=torch.float64)
        for path, v in vals.items():
            for t, y in enumerate(path):
                ref[t, y] += math.exp(v - logz)
        torch.testing.assert_close(logm[b, :n].exp().double(), ref, atol=1e-5, rtol=1e-4)


def test_log_marginals_equal_autograd_marginals_and_carry_gradient_to_transitions(tiny_labels):
    crf = _randomise(_bio_crf(tiny_labels, 3), seed=5)
    C = crf.num_tags
    em, mask, _ = _batch(C, [5, 2, 4], seed=11)
    em.requires_grad_(True)
    logm = crf.log_marginals(em, mask)
    torch.testing.assert_close(logm.exp() * mask.unsqueeze(-1), crf.marginals(em, mask), atol=1e-5, rtol=1e-4)
    (logm.exp()[mask][:, 0]).sum().backward()  # any function of the marginals
    assert crf.trans.grad is not None and crf.trans.grad.abs().sum() > 0
    assert torch.isfinite(crf.trans.grad).all() and torch.isfinite(em.grad).all()
