"""Distillation losses vs naive per-word Python loops, with padding full of garbage."""
from __future__ import annotations

import math

import pytest
import torch

from nlp_distill.distill import losses
from nlp_distill.modules.masked_loss import ce

B, L, C, H = 3, 6, 5, 4
LENGTHS = [6, 3, 1]


def _inputs(seed: int = 0, last_dim: int = C):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = True
    s = torch.randn(B, L, last_dim, generator=g, dtype=torch.float64)
    t = torch.randn(B, L, last_dim, generator=g, dtype=torch.float64) * 2
    # garbage on padding: huge values and NaN-free but absurd magnitudes
    s = torch.where(mask.unsqueeze(-1), s, torch.full_like(s, 1e4))
    t = torch.where(mask.unsqueeze(-1), t, torch.full_like(t, -3e3))
    tags = torch.randint(0, C, (B, L), generator=g)
    tags[~mask] = 999  # garbage ids on padding (must never be indexed)
    tags[0, 2] = -100  # an unlabeled real word
    weight = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    return s, t, mask, tags, weight


def _words(mask):
    return [(b, i) for b in range(mask.size(0)) for i in range(mask.size(1)) if mask[b, i]]


def _reduce_ref(terms, reduction):
    """terms: list of (value, weight) per counted word."""
    total = sum(v * w for v, w in terms)
    if reduction == "sum":
        return total
    return total / max(len(terms), 1)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    z = sum(e)
    return [v / z for v in e]


def _log_softmax(xs):
    m = max(xs)
    lz = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lz for x in xs]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_ce_matches_loop(reduction, use_weight):
    s, _, mask, tags, weight = _inputs(1)
    w = weight if use_weight else None
    got = ce(s, tags, mask, w, reduction)
    terms = []
    for b, i in _words(mask):
        y = int(tags[b, i])
        if y == -100:
            continue
        ls = _log_softmax(s[b, i].tolist())
        terms.append((-ls[y], float(weight[b]) if use_weight else 1.0))
    assert len(terms) == sum(LENGTHS) - 1
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("T", [1.0, 2.0, 3.5])
def test_kd_kl_matches_loop(reduction, use_weight, T):
    s, t, mask, _, weight = _inputs(2)
    w = weight if use_weight else None
    got = losses.kd_kl(s, t, mask, T, w, reduction)
    terms = []
    for b, i in _words(mask):
        lps = _log_softmax([x / T for x in s[b, i].tolist()])
        lpt = _log_softmax([x / T for x in t[b, i].tolist()])
        kl = sum(math.exp(a) * (a - c) for a, c in zip(lpt, lps))
        terms.append((T * T * kl, float(weight[b]) if use_weight else 1.0))
    assert float(got) == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_kd_mse_matches_loop(reduction, use_weight):
    s, t, mask, _, weight = _inputs(3)
    w = weight if use_weight else None
    got = losses.kd_mse(s, t, mask, w, reduction)
    terms = []
    for b, i in _words(mask):
        d = [(a - c) ** 2 for a, c in zip(s[b, i].tolist(), t[b, i].tolist())]
        terms.append((sum(d) / len(d), float(weight[b]) if use_weight else 1.0))
    assert float(got) == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_hidden_mse_matches_loop(reduction, use_weight):
    s, t, mask, _, weight = _inputs(4, last_dim=H)
    w = weight if use_weight else None
    got = losses.hidden_mse(s, t, mask, w, reduction)
    terms = []
    for b, i in _words(mask):
        d = [(a - c) ** 2 for a, c in zip(s[b, i].tolist(), t[b, i].tolist())]
        terms.append((sum(d) / H, float(weight[b]) if use_weight else 1.0))
    assert float(got) == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cosine_matches_loop(reduction, use_weight):
    s, t, mask, _, weight = _inputs(5, last_dim=H)
    w = weight if use_weight else None
    got = losses.cosine(s, t, mask, w, reduction)
    terms = []
    for b, i in _words(mask):
        a, c = s[b, i].tolist(), t[b, i].tolist()
        dot = sum(x * y for x, y in zip(a, c))
        na = math.sqrt(sum(x * x for x in a))
        nc = math.sqrt(sum(y * y for y in c))
        terms.append((1.0 - dot / (na * nc), float(weight[b]) if use_weight else 1.0))
    assert float(got) == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


def test_unknown_reduction_raises():
    s, t, mask, _, _ = _inputs(6)
    with pytest.raises(ValueError):
        losses.kd_mse(s, t, mask, reduction="avg")


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_kl_zero_for_equal_logits(T):
    s, _, mask, _, weight = _inputs(7)
    s = s.float()
    for red in ("mean", "sum"):
        assert abs(float(losses.kd_kl(s, s.clone(), mask, T, reduction=red))) < 1e-6
        assert abs(float(losses.kd_kl(s, s.clone(), mask, T, weight, reduction=red))) < 1e-6


def test_kd_kl_positive_for_different_logits():
    s, t, mask, _, _ = _inputs(8)
    assert float(losses.kd_kl(s, t, mask, 2.0)) > 1e-3


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_kl_gradient_analytic(T):
    s, t, mask, _, _ = _inputs(9)
    s = s.clone().requires_grad_(True)
    losses.kd_kl(s, t, mask, T, reduction="sum").backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1))  # T^2 * (p_s - p_t) / T
    expected = expected * mask.unsqueeze(-1)
    torch.testing.assert_close(s.grad, expected, rtol=1e-9, atol=1e-12)
    # padding positions get exactly zero gradient
    assert torch.all(s.grad[~mask] == 0)


def test_kd_kl_gradient_with_weight_scales_per_sentence():
    s, t, mask, _, weight = _inputs(10)
    s = s.clone().requires_grad_(True)
    losses.kd_kl(s, t, mask, 2.0, weight, reduction="sum").backward()
    expected = 2.0 * (torch.softmax(s.detach() / 2.0, -1) - torch.softmax(t / 2.0, -1))
    expected = expected * mask.unsqueeze(-1) * weight.view(B, 1, 1)
    torch.testing.assert_close(s.grad, expected, rtol=1e-9, atol=1e-12)


def test_kd_mse_is_on_raw_logits_not_log_softmax_vs_softmax():
    s, t, mask, _, _ = _inputs(11)
    s = s.float()
    # equal logits -> exactly zero (the NLP Architect bug, mse(log_softmax(s), softmax(t)), is > 0 here)
    assert float(losses.kd_mse(s, s.clone(), mask)) == 0.0
    buggy = ((torch.log_softmax(s, -1) - torch.softmax(s, -1)) ** 2).mean(-1)[mask].mean()
    assert float(buggy) > 0.1
    # and for different logits it is the raw-logit MSE, not the buggy one
    t = t.float()
    got = float(losses.kd_mse(s, t, mask))
    raw = float(((s - t) ** 2).mean(-1)[mask].mean())
    buggy2 = float(((torch.log_softmax(s, -1) - torch.softmax(t, -1)) ** 2).mean(-1)[mask].mean())
    assert got == pytest.approx(raw, rel=1e-5)
    assert abs(got - buggy2) > 1e-3


@pytest.mark.parametrize("name", ["ce", "kd_kl", "kd_mse", "hidden_mse", "cosine"])
def test_padding_gets_zero_gradient(name):
    s, t, mask, tags, weight = _inputs(12)
    s = s.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    if name == "ce":
        out = ce(s, tags, mask, weight, "sum")
    elif name == "kd_kl":
        out = losses.kd_kl(s, t, mask, 2.0, weight, "sum")
    else:
        out = getattr(losses, name)(s, t, mask, weight, "sum")
    out.backward()
    assert torch.isfinite(out)
    assert torch.all(s.grad[~mask] == 0)
    assert torch.all(torch.isfinite(s.grad))
    assert s.grad[mask].abs().sum() > 0
    if t.grad is not None:
        assert torch.all(t.grad[~mask] == 0)


def test_fully_masked_mean_is_zero_not_nan():
    s, t, mask, tags, _ = _inputs(13)
    none = torch.zeros_like(mask)
    assert float(losses.kd_kl(s, t, none)) == 0.0
    assert float(ce(s, tags, none)) == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_kd_posterior_matches_loop(reduction, use_weight, T):
    """T^2 * sum_c p_t(c) (log p_t(c) - log q(c)) per real word, q given as log marginals."""
    s, t, mask, _, weight = _inputs(5)
    log_q = torch.log_softmax(s, -1)  # any normalised distribution stands for CRF marginals here
    w = weight if use_weight else None
    got = losses.kd_posterior(log_q, t, mask, T, w, reduction)
    terms = []
    for b, i in _words(mask):
        pt = _softmax([x / T for x in t[b, i].tolist()])
        lq = log_q[b, i].tolist()
        kl = sum(p * (math.log(p) - q) for p, q in zip(pt, lq)) * T * T
        terms.append((kl, float(weight[b]) if use_weight else 1.0))
    assert got.item() == pytest.approx(_reduce_ref(terms, reduction), rel=1e-9, abs=1e-9)


def test_kd_posterior_zero_when_marginals_equal_teacher():
    _, t, mask, _, _ = _inputs(6)
    assert losses.kd_posterior(torch.log_softmax(t, -1), t, mask).item() == pytest.approx(0.0, abs=1e-9)


def test_kd_posterior_forbidden_labels_cost_a_bounded_constant_and_no_gradient():
    """A label the constrained CRF forbids (log q ~ -1e4) adds at most p * (log p + 20) and
    no gradient, instead of a ~p * 1e4 term that would inflate its emissions."""
    t = torch.tensor([[[3.0, 0.0, -2.0]]], dtype=torch.float64)  # teacher: small mass on label 2
    log_q = torch.tensor([[[math.log(0.7), math.log(0.3), -1e4]]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss = losses.kd_posterior(log_q, t, mask, reduction="sum")
    p = torch.softmax(t, -1)[0, 0]
    ref = float(p[0] * (p[0].log() - math.log(0.7)) + p[1] * (p[1].log() - math.log(0.3)) + p[2] * (p[2].log() + 20.0))
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-9) and float(loss.detach()) < 1.0
    loss.backward()
    assert float(log_q.grad[0, 0, 2]) == 0.0 and float(log_q.grad[0, 0, 0]) != 0.0


def _pearson_ref(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / (math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_dist_matches_loop(reduction, use_weight, T):
    """T^2 * [(1 - pearson over labels of word w) + mean over labels c of (1 - pearson over the
    batch's real words)] per real word."""
    s, t, mask, _, weight = _inputs(7)
    log_q = torch.log_softmax(s / T, -1)
    w = weight if use_weight else None
    got = losses.kd_dist(log_q, t, mask, T, w, reduction)
    words = list(_words(mask))
    ps = {bi: [math.exp(x) for x in log_q[bi].tolist()] for bi in words}
    pt = {bi: _softmax([x / T for x in t[bi].tolist()]) for bi in words}
    intra = sum(1 - _pearson_ref([ps[bi][c] for bi in words], [pt[bi][c] for bi in words]) for c in range(C)) / C
    terms = [((1 - _pearson_ref(ps[bi], pt[bi]) + intra) * T * T, float(weight[bi[0]]) if use_weight else 1.0)
             for bi in words]
    assert got.item() == pytest.approx(_reduce_ref(terms, reduction), rel=1e-7, abs=1e-9)


def test_kd_dist_ignores_scale_and_shift_of_the_student_distribution():
    """DIST asks for the teacher's relations: a student whose probabilities are an affine copy of
    the teacher's (a less sharp teacher) costs nothing; KL would not be zero."""
    _, t, mask, _, _ = _inputs(8)
    pt = torch.softmax(t, -1)
    flat = 0.5 * pt + 0.5 / C  # still a distribution, half as sharp
    assert losses.kd_dist(flat.log(), t, mask).item() == pytest.approx(0.0, abs=1e-6)  # eps of the correlation
    assert losses.kd_posterior(flat.log(), t, mask).item() > 0.01


def test_the_kd_loss_registry_is_what_the_flags_offer():
    """--kd_loss_fn offers exactly the registry's losses (and auto); transformer students every one
    that needs no CRF; auto and a CRF-only loss resolve by the student."""
    from nlp_distill.config import KDConfig, TransformerKDConfig
    from nlp_distill.distill.objectives import KD_LOSSES, resolve_kd_loss
    from nlp_distill.errors import ConfigError

    def choices(cls):
        return set(cls.__dataclass_fields__["loss_function"].metadata["choices"])

    assert choices(KDConfig) == {"auto", *KD_LOSSES}
    assert choices(TransformerKDConfig) == {"auto", *(k for k, v in KD_LOSSES.items() if not v.needs_crf)}
    assert resolve_kd_loss("auto", True).name == "posterior" and resolve_kd_loss("auto", False).name == "kl"
    with pytest.raises(ConfigError, match="needs a CRF student"):
        resolve_kd_loss("posterior", False)
