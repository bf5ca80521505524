"""Corpora, the token cache, splits, windows, the DataLoader and DistributedSampler."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minilm
from minilm.data import (
    ByteBPETokenizer,
    CharTokenizer,
    DataLoader,
    DatasetBatches,
    DistributedSampler,
    RandomWindowBatches,
    TokenFile,
    WindowDataset,
    encode_to_memmap,
    iter_windows,
    load_corpus,
    random_windows,
    rng_state,
    sequential_batches,
    set_rng_state,
    split_tokens,
)

# ---------------------------------------------------------------------- corpus


def test_builtin_corpus_is_deterministic_text():
    a, b = load_corpus(), load_corpus(None)
    assert a == b and len(a) > 100_000
    assert "assert" in a and "\n\n" in a


def test_corpus_from_file_and_folder(tmp_path):
    f = tmp_path / "one.txt"
    f.write_bytes("\ufeffcafé\r\nline 2".encode())
    assert load_corpus(f) == "café\r\nline 2"  # BOM dropped, bytes kept
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("B")
    (root / "a.md").write_text("A")
    (root / "sub" / "c.txt").write_text("C")
    (root / "empty.txt").write_text("")
    (root / "code.py").write_text("ignored")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.txt").write_text("hidden")
    assert load_corpus(root) == "A\n\nB\n\nC"
    assert load_corpus(str(root)) == "A\n\nB\n\nC"


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="nope.txt' does not exist"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt' is empty"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none' has no"):
        load_corpus(tmp_path / "none")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "x.txt").write_text("")
    with pytest.raises(ValueError, match="blank' has only empty"):
        load_corpus(tmp_path / "blank")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt' is not valid UTF-8"):
        load_corpus(tmp_path / "latin1.txt")


# ---------------------------------------------------------------------- token cache
class CountingCharTokenizer(CharTokenizer):
    calls = 0

    def iter_encode(self, text, chunk_size=1 << 20):
        type(self).calls += 1
        return super().iter_encode(text, chunk_size)


def test_token_cache_is_reused(tmp_path):
    text = "hello world, hello cache " * 50
    tok = CountingCharTokenizer(CharTokenizer.train(text).chars)
    path = tmp_path / "cache" / "tokens.bin"
    first = TokenFile.build(tok, text, path, chunk_size=64)
    assert not first.reused and CountingCharTokenizer.calls == 1
    assert isinstance(first.tokens, np.memmap) and first.tokens.dtype == np.uint16
    np.testing.assert_array_equal(first.tokens, tok.encode(text))
    meta = json.loads((tmp_path / "cache" / "tokens.bin.json").read_text())
    assert meta["length"] == len(text) and meta["dtype"] == "<u2"
    assert meta["tokenizer"] == tok.fingerprint()
    mtime = os.stat(path).st_mtime_ns

    again = encode_to_memmap(tok, text, path)
    assert CountingCharTokenizer.calls == 1 and os.stat(path).st_mtime_ns == mtime
    np.testing.assert_array_equal(again, first.tokens)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.bin", "tokens.bin.json"]

    other = TokenFile.build(tok, text[:-5], path)          # different text: re-encode
    assert not other.reused and CountingCharTokenizer.calls == 2 and len(other) == len(text) - 5
    bpe = ByteBPETokenizer.train(text, 270)                # different tokenizer: re-encode
    tf = TokenFile.build(bpe, text, path)
    assert not tf.reused
    np.testing.assert_array_equal(tf.tokens, bpe.encode(text))
    assert TokenFile.build(bpe, text, path).reused


def test_token_cache_detects_truncation_and_forces(tmp_path):
    text = "abcabc" * 100
    tok = CharTokenizer.train(text)
    path = tmp_path / "t.bin"
    encode_to_memmap(tok, text, path)
    with open(path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="has 10 bytes"):
        TokenFile.open(path)
    tf = TokenFile.build(tok, text, path)
    assert not tf.reused and len(tf) == len(text)
    assert not TokenFile.build(tok, text, path, force=True).reused


def test_token_cache_uint32_and_empty(tmp_path):
    chars = [chr(0x20000 + i) for i in range(70_000)]
    tok = CharTokenizer(chars)
    text = chars[-1] + chars[0] + chars[65_536]
    tokens = encode_to_memmap(tok, text, tmp_path / "big.bin")
    assert tokens.dtype == np.uint32 and tokens.tolist() == [69_999, 0, 65_536]
    empty = encode_to_memmap(CharTokenizer("a"), "", tmp_path / "empty.bin")
    assert len(empty) == 0


# ---------------------------------------------------------------------- split and windows
def test_split_tokens():
    tokens = np.arange(100, dtype=np.uint16)
    train, val = split_tokens(tokens, 0.1)
    assert len(train) == 90 and len(val) == 10
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)
    assert np.shares_memory(train, tokens)
    assert len(split_tokens(tokens, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(tokens, 1.0)
    with pytest.raises(ValueError, match="1-D"):
        split_tokens(tokens.reshape(10, 10), 0.1)


@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_random_windows_shift_and_repeatability(B, T, seed):
    tokens = (np.arange(T + 20, dtype=np.uint16) * 7) % 1000
    x, y = random_windows(tokens, B, T, np.random.default_rng(seed))
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):  # each row is a contiguous slice of the tokens
        s = int(np.flatnonzero(tokens == row_x[0])[0])
        np.testing.assert_array_equal(row_x, tokens[s:s + T])
        np.testing.assert_array_equal(row_y, tokens[s + 1:s + T + 1])
    x2, y2 = random_windows(tokens, B, T, np.random.default_rng(seed))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_random_windows_errors_and_memmap(tmp_path):
    with pytest.raises(ValueError, match="too few"):
        random_windows(np.arange(5), 2, 5, np.random.default_rng(0))
    tokens = encode_to_memmap(CharTokenizer("abcd"), "abcd" * 100, tmp_path / "m.bin")
    x, y = random_windows(tokens, 4, 8, np.random.default_rng(0))
    assert type(x) is np.ndarray and x.shape == (4, 8)


@pytest.mark.parametrize("n,B,T", [(101, 3, 10), (100, 4, 9), (11, 5, 10), (50, 1, 1)])
def test_iter_windows_covers_without_overlap(n, B, T):
    tokens = np.arange(n)
    batches = list(iter_windows(tokens, B, T))
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    k = (n - 1) // T
    assert xs.shape == (k, T) and all(len(x) <= B for x, _ in batches)
    np.testing.assert_array_equal(xs.ravel(), tokens[:k * T])
    np.testing.assert_array_equal(ys.ravel(), tokens[1:k * T + 1])
    dropped = list(iter_windows(tokens, B, T, drop_last=True))
    assert all(len(x) == B for x, _ in dropped) and len(dropped) == k // B


def test_window_dataset():
    ds = WindowDataset(np.arange(21), 5)
    assert len(ds) == 4
    x, y = ds[3]
    np.testing.assert_array_equal(x, np.arange(15, 20))
    np.testing.assert_array_equal(y, np.arange(16, 21))
    x, _ = ds.get_batch([2, 0])
    np.testing.assert_array_equal(x[:, 0], [10, 0])
    assert len(WindowDataset(np.arange(21), 5, stride=1)) == 16
    with pytest.raises(IndexError):
        ds[4]


# ---------------------------------------------------------------------- DataLoader
def _np(batch):
    return tuple(b.numpy() if isinstance(b, minilm.Tensor) else b for b in batch)


def _take(loader, n):
    it = iter(loader)
    return [_np(next(it)) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


TOKENS = (np.arange(2000) * 31 % 97).astype(np.uint16)


@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetch_gives_the_same_batches(prefetch):
    plain = _take(DataLoader(RandomWindowBatches(TOKENS, 4, 16, rng=7), prefetch=0), 12)
    with DataLoader(RandomWindowBatches(TOKENS, 4, 16, rng=7), prefetch=prefetch) as loader:
        _assert_same(_take(loader, 12), plain)
    # finite sources: same batches, then StopIteration, and a new pass starts over
    seq0 = DataLoader(sequential_batches(TOKENS, 8, 16), prefetch=0)
    seqp = DataLoader(sequential_batches(TOKENS, 8, 16), prefetch=prefetch)
    first = [_np(b) for b in seqp]
    _assert_same(first, [_np(b) for b in seq0])
    assert len(first) == len(seqp) == -(-((2000 - 1) // 16) // 8)
    _assert_same([_np(b) for b in seqp], first)


def test_loader_returns_int64_tensors_or_arrays():
    x, y = next(iter(DataLoader(RandomWindowBatches(TOKENS, 2, 8), prefetch=1)))
    assert isinstance(x, minilm.Tensor) and x.dtype == np.int64 and x.shape == (2, 8)
    x, y = next(iter(DataLoader(RandomWindowBatches(TOKENS, 2, 8), prefetch=0, as_tensor=False)))
    assert isinstance(x, np.ndarray) and y.dtype == np.int64


class FailingSource(RandomWindowBatches):
    def next_batch(self):
        if self.count == 3:
            raise RuntimeError("disk on fire")
        return super().next_batch()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_reraises_source_errors(prefetch):
    loader = DataLoader(FailingSource(TOKENS, 2, 8), prefetch=prefetch)
    it = iter(loader)
    for _ in range(3):
        next(it)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(it)
    assert loader._thread is None
    assert loader.state_dict()["source"]["count"] == 3


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_loader_resumes_exactly(prefetch):
    loader = DataLoader(RandomWindowBatches(TOKENS, 3, 12, rng=123), prefetch=prefetch)
    _take(loader, 5)
    state = json.loads(json.dumps(loader.state_dict()))  # JSON-able
    expected = _take(loader, 6)
    loader.close()
    resumed = DataLoader(RandomWindowBatches(TOKENS, 3, 12, rng=999), prefetch=prefetch)
    resumed.load_state_dict(state)
    assert resumed.batches_consumed == 5
    _assert_same(_take(resumed, 6), expected)
    loader.load_state_dict(state)  # and the same loader rewinds too
    _assert_same(_take(loader, 6), expected)
    loader.close()
    resumed.close()


def test_loader_close_stops_thread_and_rewinds():
    source = RandomWindowBatches(TOKENS, 2, 8, rng=1)
    loader = DataLoader(source, prefetch=3)
    _take(loader, 2)
    thread = loader._thread
    assert thread is not None and thread.is_alive()
    loader.close()
    assert not thread.is_alive() and loader._thread is None
    assert source.count == 2  # the prefetched batches were given back
    assert not any(t.name == "minilm-DataLoader" and t is thread for t in threading.enumerate())


def test_loader_over_a_dataset_with_shuffle():
    ds = WindowDataset(np.arange(2000), 10)  # window i starts with token 10 * i
    loader = DataLoader(ds, batch_size=16, shuffle=True, seed=3, prefetch=2, as_tensor=False)
    xs = np.concatenate([x for x, _ in loader])
    assert len(xs) == len(ds)
    assert sorted(xs[:, 0] // 10) == list(range(len(ds)))
    assert list(xs[:, 0] // 10) != list(range(len(ds)))
    loader.set_epoch(1)
    xs1 = np.concatenate([x for x, _ in loader])
    assert not np.array_equal(xs, xs1)
    with pytest.raises(ValueError, match="either sampler or shuffle"):
        DataLoader(ds, batch_size=2, shuffle=True, sampler=range(3))


def test_rng_state_helpers():
    rng = np.random.default_rng(5)
    state = json.loads(json.dumps(rng_state(rng)))
    a = rng.integers(0, 100, 10)
    set_rng_state(rng, state)
    np.testing.assert_array_equal(rng.integers(0, 100, 10), a)
    mt = np.random.Generator(np.random.MT19937(0))
    mstate = json.loads(json.dumps(rng_state(mt)))
    b = mt.random(3)
    set_rng_state(mt, mstate)
    np.testing.assert_array_equal(mt.random(3), b)
    with pytest.raises(ValueError, match="MT19937"):
        set_rng_state(rng, mstate)


# ---------------------------------------------------------------------- DistributedSampler
@given(st.integers(0, 40), st.integers(1, 5), st.booleans(), st.booleans(), st.integers(0, 3))
def test_distributed_shards(n, replicas, shuffle, drop_last, epoch):
    samplers = [DistributedSampler(n, replicas, r, shuffle=shuffle, seed=11, drop_last=drop_last)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    shards = [list(s) for s in samplers]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(samplers[0])
    order = samplers[0].global_order()
    for s in samplers[1:]:  # every rank sees the same permutation
        np.testing.assert_array_equal(s.global_order(), order)
    interleaved = [shards[i % replicas][i // replicas] for i in range(sum(map(len, shards)))]
    assert interleaved == order.tolist()
    flat = [i for s in shards for i in s]
    if drop_last:
        assert len(set(flat)) == len(flat) and n - replicas < len(flat) <= n
    else:
        assert set(flat) == set(range(n)) and len(flat) - n < replicas
        if n % replicas == 0:
            assert len(set(flat)) == len(flat)  # disjoint


def test_distributed_epochs_and_errors():
    s = DistributedSampler(100, 4, 1, seed=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(DistributedSampler(100, 1, 0).global_order()) == list(range(100))
    s.load_state_dict({"epoch": 0})
    assert list(s) == e0
    assert list(DistributedSampler(10, 2, 0, shuffle=False)) == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(10, 2, 2)


def test_distributed_windows_resume():
    ds = WindowDataset(np.arange(2000), 16)
    sources = [DatasetBatches(ds, 5, DistributedSampler(ds, 3, r, seed=4)) for r in range(3)]
    seen = []
    for src in sources:
        loader = DataLoader(src, prefetch=2, as_tensor=False)
        seen += [x for x, _ in loader]
    starts = np.concatenate(seen)[:, 0]
    assert len(starts) == 3 * -(-len(ds) // 3)  # padded to equal shards
    assert set(starts.tolist()) == set(range(0, 16 * len(ds), 16))
    # resume mid-epoch 2 on rank 1
    src = DatasetBatches(ds, 5, DistributedSampler(ds, 3, 1, seed=4))
    loader = DataLoader(src, prefetch=3, as_tensor=False)
    loader.set_epoch(2)
    _take(loader, 2)
    state = json.loads(json.dumps(loader.state_dict()))
    rest = [_np(b) for b in loader]
    fresh = DataLoader(DatasetBatches(ds, 5, DistributedSampler(ds, 3, 1, seed=4)), prefetch=1,
                       as_tensor=False)
    fresh.load_state_dict(state)
    assert state["source"]["sampler"] == {"epoch": 2}
    _assert_same([_np(b) for b in fresh], rest)


@given(n=st.integers(2, 90), B=st.integers(1, 5), T=st.integers(1, 9), data=st.data())
def test_sliding_windows_score_every_target_once(n, B, T, data):
    stride = data.draw(st.integers(1, T))
    tokens = np.arange(n)
    batches = list(iter_windows(tokens, B, T, stride=stride))
    scored = []
    for x, y in batches:
        assert x.shape == y.shape and x.shape[1] == T and len(x) <= B
        for xr, yr in zip(x, y):
            keep = yr != -100
            np.testing.assert_array_equal(yr[keep], xr[keep] + 1)  # y is x shifted by one
            scored.extend(yr[keep].tolist())
            if xr[0] > 0:  # a later window: only its last `stride` targets count
                assert keep.sum() == stride and keep[-stride:].all()
    assert scored == sorted(set(scored))  # each target once, in order
    if n >= T + 1:
        from minilm.data.windows import num_windows

        assert scored[0] == 1 and len(scored) == T + (num_windows(n, T, stride) - 1) * stride
    else:
        assert scored == []
    with pytest.raises(ValueError, match="stride must be in"):
        next(iter_windows(tokens, B, T, stride=T + 1))
