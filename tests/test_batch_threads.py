"""Data parallelism inside one process (minilm/train/batch_threads.py) and the autograd
pieces under it (collect_grads / add_collected_grads, backends' thread_rng).

- the threaded step's loss and every gradient equal the plain loop's (float64, no
  dropout; uneven slices, gradient accumulation, ignored targets), on both CPU backends;
- with dropout the step is repeatable, and its random numbers come from the backend
  generator's stream (the state advances by one draw of slice seeds);
- hooks: a gradient hook runs once per slice, a post-accumulate hook once per step;
- the Trainer with batch_threads=2 trains like batch_threads=1 (no dropout, float64);
  evaluate_loss over threads equals one batch at a time;
- on a device backend (the cupy parameter) row threads are a CPU feature: the slices run
  one at a time in the caller, the Trainer takes the plain loop (``_batch_threads() ==
  1``), the same checks hold, and the per-thread generator stream is not asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

import minilm as ml
from minilm import functional as F
from minilm.autograd import add_collected_grads, collect_grads
from minilm.backends.threads import thread_rng
from minilm.data.prefetch import device_batches
from minilm.nn import GPT, GPTConfig
from minilm.nn.module import model_backend
from minilm.tensor import Tensor
from minilm.train.batch_threads import loss_terms, split_rows, threaded_backward


def _gpt(dropout=0.0, seed=0, checkpoint=False):
    ml.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=23, context_length=8, n_layers=2, n_heads=2,
                         d_model=16, dropout=dropout,
                         checkpoint_activations=checkpoint)).double()


def _plain(model, loss_fn, micro):
    total = 0.0
    for x, y in micro:
        loss = loss_fn(x, y)
        (loss / len(micro)).backward()
        total += float(loss.item())
    return total / len(micro), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def _grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("threads, rows, accum, ckpt", [
    (2, 5, 1, False), (2, 4, 2, False), (3, 7, 1, False), (2, 1, 1, False), (2, 4, 1, True),
    (3, 6, 2, True)])
def test_threaded_step_equals_the_plain_loop(backend, threads, rows, accum, ckpt):
    # ckpt: activation checkpointing, whose backward runs an inner backward in the
    # worker (the recomputed block's input gradients must come back out of the sink)
    model = _gpt(checkpoint=ckpt)
    rng = np.random.default_rng(1)
    micro = [(rng.integers(0, 23, (rows, 8)), rng.integers(0, 23, (rows, 8)))
             for _ in range(accum)]

    def loss_fn(x, y):
        return model(x, y)[1]

    want, want_g = _plain(model, loss_fn, micro)
    model.zero_grad()
    got = threaded_backward(loss_fn, micro, threads)
    assert got == pytest.approx(want, rel=1e-12)
    for n, g in _grads(model).items():
        np.testing.assert_allclose(g, want_g[n], rtol=1e-10, atol=1e-13, err_msg=n)


def test_ignored_targets_weigh_slices_by_their_loss_terms(backend):
    model = _gpt()
    rng = np.random.default_rng(2)
    x = rng.integers(0, 23, (4, 8))
    y = rng.integers(0, 23, (4, 8))
    y[0, :7] = -100  # the first slice (rows 0-1) has far fewer targets than the second
    y[1, :] = -100
    assert loss_terms(y[:2]) == 1 and loss_terms(y[2:]) == 16

    def loss_fn(x, y):
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, 23), Tensor(y.reshape(-1), backend=backend),
                               ignore_index=-100)

    want, want_g = _plain(model, loss_fn, [(x, y)])
    model.zero_grad()
    got = threaded_backward(loss_fn, [(x, y)], 2)
    assert got == pytest.approx(want, rel=1e-12)
    for n, g in _grads(model).items():
        np.testing.assert_allclose(g, want_g[n], rtol=1e-10, atol=1e-13, err_msg=n)
    # a slice whose targets are all ignored is left out, not a NaN
    y2 = y.copy()
    y2[:2] = -100
    model.zero_grad()
    assert np.isfinite(threaded_backward(loss_fn, [(x, y2)], 2))
    assert all(np.isfinite(g).all() for g in _grads(model).values())


def test_dropout_is_repeatable_and_follows_the_backend_stream(backend):
    rng = np.random.default_rng(3)
    micro = [(rng.integers(0, 23, (4, 8)), rng.integers(0, 23, (4, 8)))]
    runs = []
    for _ in range(2):
        model = _gpt(dropout=0.3)
        ml.manual_seed(5)
        loss = threaded_backward(lambda x, y, m=model: m(x, y)[1], micro, 2)
        runs.append((loss, _grads(model), backend.get_rng_state()))
    assert runs[0][0] == runs[1][0]
    for n in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][n], runs[1][1][n], err_msg=n)
    assert runs[0][2] == runs[1][2]
    if backend.xp is not np:
        # thread_rng (a generator per worker) is a CPU-backend feature: on a device,
        # thread_map runs the slices one at a time in the caller and dropout draws from
        # the device's own generator; the step above must still be repeatable
        return
    ml.manual_seed(5)
    seeds = backend.rng.integers(0, 2**63 - 1, size=2)  # what the step drew
    assert backend.get_rng_state() == runs[0][2]
    with thread_rng(int(seeds[0])) as g:
        assert backend.rng is g  # random ops of this thread draw from it
    assert backend.rng is not g


def test_hooks_per_slice_and_per_step():
    w = Tensor(np.ones(3), requires_grad=True)
    seen, after = [], []
    w.register_hook(lambda g: seen.append(g.numpy().copy()))
    w.register_post_accumulate_grad_hook(lambda t: after.append(t.grad.numpy().copy()))
    sinks = []
    for scale in (1.0, 2.0):
        with collect_grads() as sink:
            (w * scale).sum().backward()
        sinks.append(sink)
    assert w.grad is None and after == [] and len(seen) == 2
    add_collected_grads(sinks)
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0, 3.0])
    assert len(after) == 1
    with collect_grads():  # nested sinks restore the outer one
        with collect_grads() as inner:
            (w * 4.0).sum().backward()
        assert list(inner) == [id(w)]
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0, 3.0])


def test_split_rows_blocks_and_errors():
    x, y = np.arange(10).reshape(5, 2), np.arange(5)
    parts = split_rows(x, y, 2)
    assert [p[0].shape[0] for p in parts] == [2, 3]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    assert len(split_rows(x[:1], y[:1], 4)) == 1
    with pytest.raises(ValueError, match="5 rows but targets 4"):
        split_rows(x, y[:4], 2)


def _trainer(tmp_path, batch_threads, dropout=0.0):
    from minilm.data import DataLoader, RandomWindowBatches
    from minilm.train.config import TrainConfig
    from minilm.train.trainer import Trainer

    model = _gpt(dropout=dropout)
    tokens = np.random.default_rng(4).integers(0, 23, 400).astype(np.uint16)
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=4, grad_accum_steps=2, max_steps=4,
                      warmup_steps=1, eval_interval=100, ckpt_interval=100, log_interval=1,
                      progress=False, plot=False, lr=1e-2, batch_threads=batch_threads)
    loader = DataLoader(RandomWindowBatches(tokens[:300], 4, 8, rng=7), prefetch=0)
    return Trainer(model, loader, tokens[300:], cfg)


def test_trainer_with_batch_threads_trains_like_one_thread(tmp_path, backend):
    runs = []
    for threads in (1, 2):
        t = _trainer(tmp_path / f"t{threads}", threads)
        # row threads on the CPU backends only; on a device the plain loop (1)
        assert t._batch_threads() == (threads if backend.xp is np else 1)
        batches = device_batches(iter(t.loader), model_backend(t.model))  # as fit() does
        losses = [t.train_step(batches) for _ in range(4)]
        runs.append((losses, {n: p.numpy().copy() for n, p in t.model.named_parameters()}))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-10)
    for n, p in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][n], p, rtol=1e-9, atol=1e-12, err_msg=n)


def test_evaluate_loss_over_threads_equals_one_by_one(backend):
    from minilm.data import iter_windows
    from minilm.train.trainer import evaluate_loss, model_batch_loss

    model = _gpt(dropout=0.2)  # evaluation switches dropout off, in every thread
    tokens = np.random.default_rng(6).integers(0, 23, 700)
    threaded = evaluate_loss(model, iter_windows(tokens, 4, 8))
    plain = evaluate_loss(model, iter_windows(tokens, 4, 8),
                          batch_loss=lambda x, y: model_batch_loss(model, x, y))
    assert threaded["tokens"] == plain["tokens"] > 8 * 4 * 2
    assert threaded["loss"] == pytest.approx(plain["loss"], rel=1e-12)
    assert model.training
    few = evaluate_loss(model, iter_windows(tokens, 4, 8), max_batches=2)
    assert few["tokens"] == 2 * 4 * 8
