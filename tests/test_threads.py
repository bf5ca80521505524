"""minilm.backends.threads.thread_map: whole items to whole threads, kernels single-
threaded meanwhile (docs/performance.md, "Who owns the cores").

- results in the order of the items, each item computed once, on more than one thread;
- inside a worker BLAS runs one thread and Numba one (thread-local), and BLAS's limit is
  back to what it was afterwards;
- the first exception stops the team and reaches the caller; a nested call runs in the
  worker; one thread / one item runs in the caller;
- a SentenceEncoder's embeddings do not depend on the thread count (both backends);
- on a device backend thread_map runs the items in the caller (one stream, no CPU threads).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import minilm as ml
from minilm.backends.threads import in_worker, thread_map
from minilm.nn.bert import BertConfig, BertModel, SentenceEncoder


def _blas_threads() -> list:
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


def test_results_come_back_in_order_from_several_threads():
    seen, lock = [], threading.Lock()
    barrier = threading.Barrier(2, timeout=10)  # both workers must be alive at once

    def fn(x):
        if x < 2:
            barrier.wait()
        with lock:
            seen.append((x, threading.get_ident()))
        return x * x

    out = thread_map(fn, range(20), threads=2)
    assert out == [x * x for x in range(20)]
    assert sorted(x for x, _ in seen) == list(range(20))
    assert len({t for _, t in seen}) == 2
    assert threading.get_ident() not in {t for _, t in seen}


def test_workers_run_single_threaded_kernels(backend):
    before = _blas_threads()
    inside = thread_map(lambda _: (_blas_threads(), in_worker(), _numba_threads()),
                        range(4), threads=2)
    if backend.xp is not np:  # a GPU backend: one stream, no CPU threads (in the caller)
        assert not any(worker for _, worker, _ in inside)
        assert _blas_threads() == before
        return
    for blas, worker, numba_threads in inside:
        assert worker and all(n == 1 for n in blas)
        if backend.name == "numba":
            assert numba_threads == 1
    assert _blas_threads() == before
    assert not in_worker()


def _numba_threads() -> int | None:
    import numba

    return numba.get_num_threads() if ml.backends._numba_pool_started() else None


def test_first_error_reaches_the_caller_and_stops_the_team():
    done = []

    def fn(x):
        if x == 3:
            raise ValueError("item 3 is bad")
        done.append(x)
        return x

    with pytest.raises(ValueError, match="item 3 is bad"):
        thread_map(fn, range(1000), threads=2)
    assert len(done) < 20  # the other worker stops taking items once the error is in


def test_plain_loop_in_the_caller_when_nothing_to_share():
    me = threading.get_ident()
    assert thread_map(lambda x: threading.get_ident(), [1, 2, 3], threads=1) == [me] * 3
    assert thread_map(lambda x: threading.get_ident(), [1]) == [me]
    assert thread_map(lambda x: x, []) == []
    # a call from inside a worker runs there (no second team, no oversubscription)
    nested = thread_map(lambda x: thread_map(lambda y: threading.get_ident(), [x, x]),
                        [1, 2], threads=2)
    for a, b in nested:
        assert a == b != me
    with pytest.raises(ValueError, match="threads must be at least 1"):
        thread_map(lambda x: x, [1, 2], threads=0)


def test_encoder_embeddings_do_not_depend_on_threads(backend):
    ml.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=24)
    enc = SentenceEncoder(BertModel(cfg))
    rng = np.random.default_rng(0)
    ids = [[2, *rng.integers(4, 30, size=int(n)).tolist(), 3]
           for n in rng.integers(1, 20, size=37)]
    one = enc.encode_ids(ids, batch_size=4, threads=1)
    two = enc.encode_ids(ids, batch_size=4, threads=2)
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-7)
    single = np.stack([enc.encode_ids([s])[0] for s in ids[:5]])
    np.testing.assert_allclose(two[:5], single, rtol=1e-5, atol=1e-6)
    enc.train()  # encode runs in eval mode and gives the mode back
    enc.encode_ids(ids, threads=2)
    assert enc.training


def test_blas_limit_is_changed_by_the_main_thread_only_and_nests():
    from minilm.backends.threads import one_thread

    before = _blas_threads()
    seen = []

    def other():  # a section in another thread leaves the process-wide limit alone
        with one_thread():
            seen.append(_blas_threads())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [before] and _blas_threads() == before
    with one_thread():
        with one_thread():  # nested: the inner exit must not restore
            pass
        assert all(n == 1 for n in _blas_threads())
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before
