"""Sequence-length curriculum (minilm/data/curriculum.py): the schedule's values, batch
shapes following it, a state round trip that resumes identically (also through the
DataLoader), and windows that are valid slices of the token array."""

import numpy as np
import pytest

from minilm.data import DataLoader
from minilm.data.curriculum import LengthCurriculumBatches, curriculum_length


def test_linear_schedule_values():
    got = [curriculum_length(t, 16, 128, 100, "linear", multiple=8) for t in (0, 1, 25, 50, 99, 100, 500)]
    # 16 + 8 * floor(p * 112 / 8)
    assert got == [16, 16, 16 + 8 * 3, 16 + 8 * 7, 16 + 8 * 13, 128, 128]
    assert [curriculum_length(t, 4, 12, 8) for t in range(10)] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 12]


def test_stepwise_and_geometric_schedule_values():
    got = [curriculum_length(t, 16, 128, 100, "stepwise", stages=4) for t in (0, 24, 25, 50, 75, 99, 100)]
    assert got == [16, 16, 44, 72, 100, 100, 128]
    got = [curriculum_length(t, 16, 128, 90, "geometric") for t in (0, 30, 60, 90)]
    assert got == [16, 32, 64, 128]  # 16 * 8 ** (t / 90)
    lens = [curriculum_length(t, 8, 64, 37, "geometric", multiple=4) for t in range(40)]
    assert lens == sorted(lens) and min(lens) == 8 and lens[-1] == 64
    assert all(v % 4 == 0 for v in lens)
    assert curriculum_length(5, 8, 64, 0) == 64  # no warm-up: full length at once
    with pytest.raises(ValueError):
        curriculum_length(0, 8, 64, 10, "cosine")
    with pytest.raises(ValueError):
        curriculum_length(0, 65, 64, 10)


def test_batches_follow_the_schedule_and_are_valid_slices():
    tokens = np.arange(1000, dtype=np.int64) * 7 % 997  # distinct values: recover each start
    src = LengthCurriculumBatches(tokens, batch_size=5, max_length=64, min_length=8,
                                  warmup_steps=20, schedule="linear", multiple=4, rng=3)
    for t in range(30):
        assert src.current_length == curriculum_length(t, 8, 64, 20, multiple=4)
        x, y = src.next_batch()
        L = curriculum_length(t, 8, 64, 20, multiple=4)
        assert x.shape == y.shape == (5, L) and x.dtype == np.int64
        for row_x, row_y in zip(x, y):
            s = int(np.flatnonzero(tokens == row_x[0])[0])
            assert 0 <= s <= len(tokens) - L - 1
            np.testing.assert_array_equal(row_x, tokens[s:s + L])
            np.testing.assert_array_equal(row_y, tokens[s + 1:s + L + 1])


def test_constant_tokens_scales_the_batch():
    src = LengthCurriculumBatches(np.arange(500), 4, 64, 16, warmup_steps=10, constant_tokens=True)
    x, _ = src.next_batch()
    assert x.shape == (16, 16)  # 4 * 64 / 16 rows of 16


def test_state_round_trip_resumes_identically():
    tokens = np.random.default_rng(0).integers(0, 50, size=3000)
    kw = dict(batch_size=4, max_length=32, min_length=4, warmup_steps=12, schedule="stepwise",
              stages=3, rng=11, num_batches=5)
    a = LengthCurriculumBatches(tokens, **kw)
    ref = []
    for _ in range(4):  # 4 passes of 5: the clock keeps running across passes
        a.reset()
        while True:
            try:
                ref.append(a.next_batch())
            except StopIteration:
                break
    assert len(ref) == 20 and ref[-1][0].shape[1] == 32
    b = LengthCurriculumBatches(tokens, **kw)
    for _ in range(7):
        b.next_batch() if b.count < 5 else (b.reset(), b.next_batch())
    state = b.state_dict()
    c = LengthCurriculumBatches(tokens, **{**kw, "rng": 999})
    c.load_state_dict(state)
    assert c.step == 7 and c.current_length == a.length_at(7)
    for i in range(7, 20):
        if c.count >= 5:
            c.reset()
        x, y = c.next_batch()
        np.testing.assert_array_equal(x, ref[i][0])
        np.testing.assert_array_equal(y, ref[i][1])


def test_through_the_dataloader():
    tokens = np.random.default_rng(1).integers(0, 30, size=2000)
    kw = dict(batch_size=3, max_length=24, min_length=6, warmup_steps=10, rng=5)
    loader = DataLoader(LengthCurriculumBatches(tokens, **kw), prefetch=2, as_tensor=False)
    it = iter(loader)
    first = [next(it) for _ in range(6)]
    assert [x.shape[1] for x, _ in first] == [curriculum_length(t, 6, 24, 10) for t in range(6)]
    state = loader.state_dict()
    rest = [next(it) for _ in range(8)]
    loader.close()
    loader2 = DataLoader(LengthCurriculumBatches(tokens, **kw), prefetch=0, as_tensor=False)
    loader2.load_state_dict(state)
    it2 = iter(loader2)
    for x, _ in rest:
        np.testing.assert_array_equal(next(it2)[0], x)
    loader2.close()
