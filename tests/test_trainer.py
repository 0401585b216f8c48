"""The generic Trainer on a tiny regression model: loss, best checkpoint, early stopping,
gradient accumulation, resume; and atomic_dir."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_distill.config import TrainerConfig
from nlp_distill.io import atomic_dir
from nlp_distill.training.checkpoint import load_state
from nlp_distill.training.trainer import Trainer


def _data(n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.tensor([1.5, -2.0, 0.5][:d])
    y = x @ w + 0.3 + 0.01 * torch.randn(n, generator=g)
    return x, y


def _batches_fn(x, y, batch_size=8, calls=None):
    """epoch -> batches, a fixed permutation per epoch (deterministic, for resume)."""
    def f(epoch):
        if calls is not None:
            calls.append(epoch)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(100 + epoch))
        return [(x[perm[i : i + batch_size]], y[perm[i : i + batch_size]]) for i in range(0, len(x), batch_size)]
    return f


def _mse_sum(model):
    def loss_fn(batch):
        xb, yb = batch
        return ((model(xb).squeeze(-1) - yb) ** 2).sum(), len(yb)
    return loss_fn


def _save(model):
    def save(folder):
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(Path(folder) / "w.safetensors"))
    return save


def _cfg(**kw):
    base = dict(epochs=3, lr=0.05, optimizer="adam", max_grad_norm=0.0, show_progress=False, seed=0,
                metric_for_best="score")
    base.update(kw)
    return TrainerConfig(**base)


def _log(out):
    return [json.loads(l) for l in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def test_loss_falls(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(3, 1)
    loss_fn = _mse_sum(model)

    def evaluate():
        with torch.no_grad():
            s, n = loss_fn((x, y))
        return {"score": -float(s) / n}

    res = Trainer(model=model, config=_cfg(epochs=6), loss_fn=loss_fn, train_batches=_batches_fn(x, y), num_batches=8,
                  evaluate=evaluate, save_model=_save(model), output_dir=tmp_path).train()
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 6
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        final = float(((model(x).squeeze(-1) - y) ** 2).mean())
    assert final < 0.2 * losses[0]
    assert res.best_epoch == 1 + max(range(6), key=lambda i: res.history[i]["dev_score"])


def test_best_checkpoint_is_best_dev_epoch(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(3, 1)
    script = [0.1, 0.5, 0.3, 0.7, 0.2]
    snaps = []

    def evaluate():
        snaps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"score": script[len(snaps) - 1], "extra": {"nested": 1}}

    res = Trainer(model=model, config=_cfg(epochs=5), loss_fn=_mse_sum(model), train_batches=_batches_fn(x, y),
                  num_batches=8, evaluate=evaluate, save_model=_save(model), output_dir=tmp_path).train()
    best_i = max(range(len(script)), key=script.__getitem__)
    assert res.best_epoch == best_i + 1
    assert res.best_metric == script[best_i]
    saved = load_file(str(tmp_path / "model" / "w.safetensors"))
    for k, v in snaps[best_i].items():
        assert torch.equal(saved[k], v)
    # and not the last epoch's weights (which differ)
    assert not all(torch.equal(saved[k], v) for k, v in snaps[-1].items())
    log = _log(tmp_path)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["dev_score"] for r in log] == script
    running, flags = float("-inf"), []
    for s in script:
        flags.append(s > running)
        running = max(running, s)
    assert [r["best"] for r in log] == flags
    assert "dev_extra" not in log[0]  # nested metrics are not logged per epoch
    # no temporary folders left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("patience,script,expected_epochs", [
    (2, [0.5, 0.6, 0.4, 0.6, 0.9, 1.0, 1.0, 1.0], 4),
    (1, [0.5, 0.4, 0.9], 2),
    (3, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 6),  # never stops: always improving
    (2, [0.5, 0.4, 0.6, 0.5, 0.55, 0.9], 5),  # the counter resets on improvement
    # a model that scores 0 (tags no entity yet) is never stopped: patience counts from the first score above 0
    (2, [0.0, 0.0, 0.0, 0.0, 0.3, 0.2, 0.2, 0.9], 7),
    (1, [0.0] * 6, 6),
    (1, [-0.5, -0.4, -0.45, -0.3], 3),  # a negative score (a loss) counts as any other
])
def test_early_stopping(tmp_path, patience, script, expected_epochs):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(3, 1)
    calls, evals = [], []

    def evaluate():
        evals.append(1)
        return {"score": script[len(evals) - 1]}

    res = Trainer(model=model, config=_cfg(epochs=len(script), early_stopping_patience=patience),
                  loss_fn=_mse_sum(model), train_batches=_batches_fn(x, y, calls=calls), num_batches=8,
                  evaluate=evaluate, save_model=_save(model), output_dir=tmp_path).train()
    # reference: stop once `patience` consecutive epochs fail to beat the best so far
    best, bad, ref = float("-inf"), 0, 0
    for s in script:
        ref += 1
        if s > best:
            best, bad = s, 0
        elif best != 0:
            bad += 1
            if bad >= patience:
                break
    assert ref == expected_epochs
    assert len(res.history) == expected_epochs
    assert calls == list(range(expected_epochs))
    assert len(_log(tmp_path)) == expected_epochs


def _accum_run(tmp_path, groups, accum, lr=0.1):
    """One epoch of SGD over the given micro-batches; returns the final parameters."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    cfg = _cfg(epochs=1, optimizer="sgd", lr=lr, grad_accum_steps=accum)
    Trainer(model=model, config=cfg, loss_fn=_mse_sum(model), train_batches=lambda ep: list(groups),
            num_batches=len(groups), evaluate=lambda: {"score": 0.0}, save_model=_save(model),
            output_dir=tmp_path).train()
    return model


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    x, y = _data(n=7)
    small = [(x[:2], y[:2]), (x[2:], y[2:])]  # unequal micro-batches: 2 and 5 items
    big = [(x, y)]
    a = _accum_run(tmp_path / "a", small, accum=2)
    b = _accum_run(tmp_path / "b", big, accum=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)

    # reference: one SGD step on the mean loss over all 7 items, from the same init
    torch.manual_seed(0)
    ref = nn.Linear(3, 1)
    init = [p.detach().clone() for p in ref.parameters()]
    ((ref(x).squeeze(-1) - y) ** 2).mean().backward()
    expected = [p0 - 0.1 * p.grad for p0, p in zip(init, ref.parameters())]
    for pa, pe in zip(a.parameters(), expected):
        torch.testing.assert_close(pa.detach(), pe, atol=1e-6, rtol=1e-6)
    # averaging the two micro-batch means instead would give something else (the test has teeth)
    ref.zero_grad()
    sum(((ref(xb).squeeze(-1) - yb) ** 2).mean() for xb, yb in small).div(2).backward()
    wrong = [p0 - 0.1 * p.grad for p0, p in zip(init, ref.parameters())]
    assert not all(torch.allclose(pa.detach(), pw, atol=1e-5) for pa, pw in zip(a.parameters(), wrong))


def test_grad_accumulation_last_short_group(tmp_path):
    x, y = _data(n=10)
    micro = [(x[:3], y[:3]), (x[3:4], y[3:4]), (x[4:], y[4:])]  # accum=2 -> groups {0,1}, {2}
    big = [(x[:4], y[:4]), (x[4:], y[4:])]
    a = _accum_run(tmp_path / "a", micro, accum=2)
    b = _accum_run(tmp_path / "b", big, accum=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)


class _DropNet(nn.Module):
    """Uses dropout so that resume must also restore the RNG."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.drop = nn.Dropout(0.3)
        self.b = nn.Linear(8, 1)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


def _resume_trainer(out, epochs, init_seed, calls):
    x, y = _data(n=48)
    torch.manual_seed(init_seed)
    model = _DropNet()
    loss_fn = _mse_sum(model)
    xd, yd = _data(n=16, seed=1)

    def evaluate():
        with torch.no_grad():
            s, n = loss_fn((xd, yd))
        return {"score": -float(s) / n}

    cfg = _cfg(epochs=epochs, lr=0.02, max_grad_norm=1.0, seed=7)
    return model, Trainer(model=model, config=cfg, loss_fn=loss_fn, train_batches=_batches_fn(x, y, calls=calls),
                          num_batches=6, evaluate=evaluate, save_model=_save(model), output_dir=out)


def test_resume_matches_uninterrupted_run(tmp_path):
    full_model, full = _resume_trainer(tmp_path / "full", 4, init_seed=1, calls=[])
    res_full = full.train()

    calls1 = []
    _, part = _resume_trainer(tmp_path / "part", 2, init_seed=1, calls=calls1)
    part.train()
    assert calls1 == [0, 1]
    assert len(_log(tmp_path / "part")) == 2

    calls2 = []
    # a different init: resume must load the checkpointed weights
    model2, resumed = _resume_trainer(tmp_path / "part", 4, init_seed=999, calls=calls2)
    res2 = resumed.train(resume=True)
    assert calls2 == [2, 3]  # continues from epoch 3
    # the last epoch's weights (the checkpoint's) are those of the uninterrupted run
    last_full, last_part = (load_state(d / "checkpoint" / "trainer_state.pt")["model"] for d in
                            (tmp_path / "full", tmp_path / "part"))
    for k, p1 in last_full.items():
        torch.testing.assert_close(last_part[k], p1, atol=1e-7, rtol=1e-6, msg=k)
    log_full, log_part = _log(tmp_path / "full"), _log(tmp_path / "part")
    assert [r["epoch"] for r in log_part] == [1, 2, 3, 4]
    for a, b in zip(log_full, log_part):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["dev_score"] == pytest.approx(b["dev_score"], rel=1e-6)
        assert a["best"] == b["best"]
    assert res2.best_epoch == res_full.best_epoch
    assert len(res2.history) == 4
    # the best model on disk is the same as in the uninterrupted run
    wf = load_file(str(tmp_path / "full" / "model" / "w.safetensors"))
    wp = load_file(str(tmp_path / "part" / "model" / "w.safetensors"))
    for k in wf:
        torch.testing.assert_close(wp[k], wf[k], atol=1e-7, rtol=1e-6)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    calls = []
    _, tr = _resume_trainer(tmp_path / "fresh", 2, init_seed=1, calls=calls)
    tr.train(resume=True)
    assert calls == [0, 1]


def test_atomic_dir_keeps_old_folder_on_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            (tmp / "weights.txt").write_text("new")
            (tmp / "extra.txt").write_text("new")
            raise RuntimeError("boom")
    assert (target / "weights.txt").read_text() == "old"
    assert not (target / "extra.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # temp folder removed

    with atomic_dir(target) as tmp:
        (tmp / "weights.txt").write_text("new")
    assert (target / "weights.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    fresh = tmp_path / "sub" / "fresh"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(fresh) as tmp:
            raise KeyboardInterrupt
    assert not fresh.exists() and list((tmp_path / "sub").iterdir()) == []


def test_failed_save_keeps_previous_best(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(3, 1)
    scores = iter([0.1, 0.2, 0.3])
    snaps, n_saves = [], []
    good = _save(model)

    def save(folder):
        n_saves.append(1)
        if len(n_saves) == 2:
            (Path(folder) / "w.safetensors").write_text("partial")
            raise OSError("disk full")
        good(folder)

    def evaluate():
        snaps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    with pytest.raises(OSError):
        Trainer(model=model, config=_cfg(epochs=3), loss_fn=_mse_sum(model), train_batches=_batches_fn(x, y),
                num_batches=8, evaluate=evaluate, save_model=save, output_dir=tmp_path).train()
    saved = load_file(str(tmp_path / "model" / "w.safetensors"))
    for k, v in snaps[0].items():
        assert torch.equal(saved[k], v)


def test_after_train_the_model_holds_the_best_epochs_weights_like_model_folder(tmp_path):
    """The in-memory model ends with the weights dev picked (the moving average with ema_decay),
    identical to model/; the checkpoint keeps the last epoch's for a resume."""
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        x, y = _data()
        model = nn.Linear(3, 1)
        scores = iter([0.1, 0.5, 0.2, 0.3])  # epoch 2 is the best, not the last
        out = tmp_path / f"ema{ema}"
        res = Trainer(model=model, config=_cfg(epochs=4, ema_decay=ema), loss_fn=_mse_sum(model),
                      train_batches=_batches_fn(x, y), num_batches=8, evaluate=lambda: {"score": next(scores)},
                      save_model=_save(model), output_dir=out).train()
        assert res.best_epoch == 2 and res.best_metric == 0.5
        saved = load_file(str(out / "model" / "w.safetensors"))
        last = load_state(out / "checkpoint" / "trainer_state.pt")["model"]
        for k, v in model.state_dict().items():
            assert torch.equal(v, saved[k]), k
            assert not torch.equal(v, last[k]), k


def test_resume_after_early_stop_trains_no_more(tmp_path):
    """A run that early-stopped is finished: resuming it must not train further epochs."""
    x, y = _data()
    script = [0.5, 0.4, 0.3, 0.9, 0.9, 0.9]

    def run(calls, resume):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        scores = iter(script[len(_log(tmp_path)) if resume else 0:])
        tr = Trainer(model=model, config=_cfg(epochs=6, early_stopping_patience=2), loss_fn=_mse_sum(model),
                     train_batches=_batches_fn(x, y, calls=calls), num_batches=8,
                     evaluate=lambda: {"score": next(scores)}, save_model=_save(model),
                     output_dir=tmp_path)
        return tr.train(resume=resume)

    calls1, calls2 = [], []
    res1 = run(calls1, resume=False)
    assert calls1 == [0, 1, 2] and res1.best_epoch == 1
    res2 = run(calls2, resume=True)
    assert calls2 == []
    assert res2.best_epoch == 1 and len(res2.history) == 3
    assert len(_log(tmp_path)) == 3


def _lrs(config, total_steps: int):
    """The learning rate of each of ``total_steps`` optimiser steps under ``config``'s schedule."""
    from nlp_distill.training.trainer import build_scheduler

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, config, total_steps=total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_linear_decay_schedule_values():
    # 2 warm-up steps ramp to the peak, then linear decay to 0 at step 8
    assert _lrs(_cfg(scheduler="linear", warmup_ratio=0.25), 8) == pytest.approx(
        [0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert _lrs(_cfg(scheduler="constant", warmup_ratio=0.5), 4) == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_gradient_clipping_bounds_the_step(tmp_path):
    """With max_grad_norm the applied gradient has at most that norm; without, the raw one."""
    for clip in (0.0, 0.01):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        seen = []
        orig = torch.optim.SGD.step

        def spy(self, *a, **k):
            seen.append(float(torch.norm(torch.stack([p.grad.norm() for g in self.param_groups for p in g["params"]]))))
            return orig(self, *a, **k)

        torch.optim.SGD.step = spy
        try:
            x, y = _data(16)
            Trainer(model=model, config=_cfg(epochs=1, optimizer="sgd", max_grad_norm=clip, lr=0.001),
                    loss_fn=_mse_sum(model), train_batches=_batches_fn(x, y, batch_size=16),
                    num_batches=1, evaluate=lambda: {"score": 0.0}, save_model=_save(model),
                    output_dir=tmp_path / f"c{clip}").train()
        finally:
            torch.optim.SGD.step = orig
        assert len(seen) == 1
        if clip:
            assert seen[0] == pytest.approx(clip, rel=1e-4)
        else:
            assert seen[0] > 0.1




CHURN = """
import random, sys, torch
from nlp_distill.utils.memory import limit_heap_growth
def rss_mb():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) // 1024
if sys.argv[1] == 'limit':
    assert limit_heap_growth()
torch.set_num_threads(1); torch.manual_seed(0); rng = random.Random(0)
lstm = torch.nn.LSTM(64, 64, batch_first=True, bidirectional=True)
opt = torch.optim.Adam(lstm.parameters())
start = rss_mb()
for _ in range(250):  # training steps on batches of varying padded shapes, as a student sees them
    out, _ = lstm(torch.randn(rng.randint(4, 48), rng.randint(3, 120), 64))
    out.pow(2).mean().backward(); opt.step(); opt.zero_grad()
print(rss_mb() - start)
"""


def test_limit_heap_growth_keeps_resident_memory_flat_over_varying_batch_shapes():
    """Without the fixed mmap threshold glibc's heap grows by hundreds of MB over 250 BiLSTM steps
    on varying shapes (nothing is live); with it the growth is a fraction of that (Linux/glibc)."""
    import subprocess
    import sys

    from nlp_distill.utils.memory import limit_heap_growth
    if not sys.platform.startswith("linux") or not limit_heap_growth():
        pytest.skip("glibc mallopt not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    growth = {m: int(subprocess.run([sys.executable, "-c", CHURN, m], capture_output=True, text=True, env=env,
                                    check=True).stdout.split()[-1]) for m in ("none", "limit")}
    if growth["none"] < 200:
        pytest.skip(f"this allocator does not show the growth ({growth})")
    assert growth["limit"] < growth["none"] / 2, growth


def test_ema_weights_follow_the_naive_formula_and_are_what_dev_judges_and_model_keeps(tmp_path):
    """--ema_decay: after every optimiser step avg = d*avg + (1-d)*w with d = min(decay,
    (1+t)/(10+t)); evaluate() sees the average, model/ holds it, training continues from the live
    weights; resume restores the average."""
    from nlp_distill.training.trainer import WeightAverage

    x, y = _data(n=32)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    live, naive, seen = [], [p.detach().clone() for p in model.parameters()], []
    loss_fn = _mse_sum(model)
    orig_update = WeightAverage.update

    def update(self):  # record the live weights each step, and update a naive average beside it
        t = self.steps
        d = min(0.9, (1 + t) / (10 + t))
        for i, p in enumerate(model.parameters()):
            naive[i] = d * naive[i] + (1 - d) * p.detach()
        live.append([p.detach().clone() for p in model.parameters()])
        orig_update(self)

    def evaluate():
        seen.append([p.detach().clone() for p in model.parameters()])
        return {"score": float(len(seen))}  # every epoch improves: model/ is the last average

    WeightAverage.update = update
    try:
        tr = Trainer(model=model, config=_cfg(epochs=2, ema_decay=0.9), loss_fn=loss_fn,
                     train_batches=_batches_fn(x, y), num_batches=4, evaluate=evaluate,
                     save_model=_save(model), output_dir=tmp_path)
        tr.train()
    finally:
        WeightAverage.update = orig_update
    assert len(live) == 8
    for a, b in zip(seen[-1], naive):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(seen[-1][0], live[-1][0])  # the average is not the live weights
    saved = load_file(str(tmp_path / "model" / "w.safetensors"))
    torch.testing.assert_close(saved["weight"], naive[0], atol=1e-6, rtol=1e-5)
    # swapped back after evaluation and saving: training went on from the live weights (the checkpoint's);
    # after train() the model holds what model/ holds, the average
    torch.testing.assert_close(load_state(tmp_path / "checkpoint" / "trainer_state.pt")["model"]["weight"], live[-1][0])
    torch.testing.assert_close(model.weight.detach(), naive[0], atol=1e-6, rtol=1e-5)
    # resume restores the average (steps and shadow)
    tr2 = Trainer(model=model, config=_cfg(epochs=2, ema_decay=0.9), loss_fn=loss_fn, train_batches=_batches_fn(x, y),
                  num_batches=4, evaluate=evaluate, save_model=_save(model), output_dir=tmp_path)
    tr2._resume()
    assert tr2.ema.steps == 8
    torch.testing.assert_close(tr2.ema.shadow[0], naive[0], atol=1e-6, rtol=1e-5)


def test_resume_under_warmup_and_linear_decay_equals_the_uninterrupted_run(tmp_path):
    """A run killed after epoch 2 of 4 and resumed takes the same learning rate at every step and
    ends with the same weights as one that was never stopped (the schedule's position is restored)."""
    def run(out, stop_at=None, resume=False, init_seed=1):
        x, y = _data(n=48)
        torch.manual_seed(init_seed)
        model = _DropNet()
        mse = _mse_sum(model)
        lrs = []
        cfg = _cfg(epochs=4, lr=0.05, seed=7, scheduler="linear", warmup_ratio=0.25, optimizer="adamw")
        batches = _batches_fn(x, y)

        def train_batches(epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt  # killed after the checkpoint of the epoch before
            return batches(epoch)

        def loss_fn(batch):
            lrs.append(tr.optimizer.param_groups[0]["lr"])
            return mse(batch)

        tr = Trainer(model=model, config=cfg, loss_fn=loss_fn, train_batches=train_batches, num_batches=6,
                     evaluate=lambda: {"score": 0.0}, save_model=_save(model), output_dir=out)
        try:
            tr.train(resume=resume)
        except KeyboardInterrupt:
            pass
        return load_state(out / "checkpoint" / "trainer_state.pt")["model"], lrs  # the last epoch's weights

    full, lrs_full = run(tmp_path / "full")
    _, lrs_a = run(tmp_path / "part", stop_at=2)
    resumed, lrs_b = run(tmp_path / "part", resume=True, init_seed=999)
    assert len(lrs_full) == 24 and len(set(lrs_full)) > 12  # 6 warm-up steps, then a decay: no flat stretch
    assert lrs_a + lrs_b == pytest.approx(lrs_full, rel=1e-9, abs=0)
    for k, p1 in full.items():
        torch.testing.assert_close(resumed[k], p1, atol=1e-7, rtol=1e-6, msg=k)


@pytest.mark.parametrize("min_steps, epochs, patience", [(0, 10, 1), (80, 10, 1), (81, 20, 2), (200, 30, 3)])
def test_min_steps_multiplies_epochs_and_patience_on_small_data(tmp_path, min_steps, epochs, patience):
    """8 batches an epoch: the default 10 epochs give 80 steps; 81 steps take twice the epochs and
    the patience, 200 three times; an epoch count the caller set is kept."""
    from nlp_distill.training.trainer import at_least_min_steps

    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(3, 1)
    calls = []
    cfg = _cfg(epochs=TrainerConfig().epochs, early_stopping_patience=1, min_steps=min_steps)
    tr = Trainer(model=model, config=cfg, loss_fn=_mse_sum(model), train_batches=_batches_fn(x, y, calls=calls),
                 num_batches=8, evaluate=lambda: {"score": 1.0}, save_model=_save(model), output_dir=tmp_path)
    assert (tr.config.epochs, tr.config.early_stopping_patience) == (epochs, patience)
    tr.train()
    assert tr.global_step == 8 * min(epochs, 1 + patience)  # a flat dev score stops after the patience
    assert at_least_min_steps(_cfg(epochs=11, min_steps=200), 8).epochs == 11  # set by the caller: kept
    assert at_least_min_steps(_cfg(epochs=10, min_steps=80), 8).epochs == 10  # 80 steps already
