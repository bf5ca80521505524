"""Pipeline parallelism: schedules, partition, and pp = 2 / 4 training equal to one process."""

import itertools

import numpy as np
import pytest

from minilm.parallel.pipeline import (
    BACKWARD,
    FORWARD,
    Action,
    PipelineStage,
    bubble_fraction,
    format_schedule,
    full_state_dict,
    gpt_layer_costs,
    load_full_state_dict,
    make_schedule,
    max_in_flight,
    partition_balanced,
    run_pipeline,
    simulate_schedule,
    train_step,
)
from tests.mpi.common import (
    STEPS,
    compare,
    global_batch,
    make_model,
    make_optimizer,
)

F, B = FORWARD, BACKWARD

# ---------------------------------------------------------------------------- schedules


def test_gpipe_actions_pp4_m8():
    for s in range(4):
        acts = make_schedule("gpipe", 4, s, 8)
        assert acts == [Action(F, i) for i in range(8)] + [Action(B, i) for i in range(8)]
        assert max_in_flight(acts) == 8


def test_1f1b_actions_pp4_m8():
    text = {s: " ".join(str(a) for a in make_schedule("1f1b", 4, s, 8)) for s in range(4)}
    assert text[0] == "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7"
    assert text[1] == "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7"
    assert text[3] == "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7"
    for s in range(4):
        acts = make_schedule("1f1b", 4, s, 8)
        warmup = 4 - s - 1
        assert all(a.op == F for a in acts[:warmup]) and acts[warmup] == Action(F, warmup)
        assert acts[warmup + 1] == Action(B, 0)


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_schedules_are_complete_and_ordered(kind):
    for pp, M in itertools.product(range(1, 7), range(1, 11)):
        for s in range(pp):
            acts = make_schedule(kind, pp, s, M)
            assert sorted(a for a in acts if a.op == F) == [Action(F, i) for i in range(M)]
            assert sorted(a for a in acts if a.op == B) == [Action(B, i) for i in range(M)]
            for i in range(M):  # each backward after its forward; micro-batches in order
                assert acts.index(Action(F, i)) < acts.index(Action(B, i))
            assert [a.mb for a in acts if a.op == F] == list(range(M))
            assert [a.mb for a in acts if a.op == B] == list(range(M))
            if kind == "1f1b":
                assert max_in_flight(acts) == min(pp - s, M)  # never more than pp - stage


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_simulated_schedules_never_deadlock_and_match_the_bubble(kind):
    for pp, M in itertools.product(range(1, 9), range(1, 17)):
        sim = simulate_schedule(kind, pp, M, t_forward=1.0, t_backward=2.0)
        assert sim["bubble"] == pytest.approx(bubble_fraction(pp, M), abs=1e-12)
        assert sim["makespan"] == pytest.approx((M + pp - 1) * 3.0)


def test_bubble_fraction_and_printing():
    assert bubble_fraction(1, 4) == 0.0
    assert bubble_fraction(2, 4) == pytest.approx(1 / 5)
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)
    with pytest.raises(ValueError, match="micro_batches"):
        bubble_fraction(2, 0)
    text = format_schedule("1f1b", 4, 8)
    assert "stage 3: .. .. .. F0 B0 F1 B1" in text and text.count("\n") == 4
    assert "stage 0: F0 F1 F2 F3 B0" in format_schedule("1f1b", 4, 8, timeline=False)
    with pytest.raises(ValueError, match="unknown schedule 'zb'"):
        make_schedule("zb", 2, 0, 4)


# ---------------------------------------------------------------------------- partition


def _brute_force(costs, k, first, last):
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(1, n), k - 1):
        b = [0, *cuts, n]
        loads = [sum(costs[b[i]:b[i + 1]]) for i in range(k)]
        loads[0] += first
        loads[-1] += last
        best = max(loads) if best is None else min(best, max(loads))
    return best


def test_partition_is_optimal_and_contiguous():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        k = int(rng.integers(1, n + 1))
        costs = rng.integers(1, 20, size=n).tolist()
        first, last = int(rng.integers(0, 30)), int(rng.integers(0, 30))
        parts = partition_balanced(costs, k, first, last)
        assert len(parts) == k and parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert all(lo < hi for lo, hi in parts)
        loads = [sum(costs[lo:hi]) for lo, hi in parts]
        loads[0] += first
        loads[-1] += last
        assert max(loads) == _brute_force(costs, k, first, last)


def test_partition_examples():
    assert partition_balanced([1] * 8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    # a heavy embedding pushes blocks off the first stage
    assert partition_balanced([1] * 6, 2, first_extra=2) == [(0, 2), (2, 6)]
    assert partition_balanced([1] * 6, 2, last_extra=4) == [(0, 5), (5, 6)]
    costs, first, last = gpt_layer_costs(make_model())
    assert len(costs) == 4 and len(set(costs)) == 1
    assert partition_balanced(costs, 2, first, last) == [(0, 2), (2, 4)]
    assert partition_balanced(costs, 4, first, last) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_more_stages_than_layers_is_refused():
    with pytest.raises(ValueError, match="3 layers cannot be split into 4 pipeline stages"):
        partition_balanced([1, 1, 1], 4)
    with pytest.raises(ValueError, match="4 layers cannot be split into 5 pipeline stages"):
        PipelineStage(make_model(), stage=0, n_stages=5)


# ---------------------------------------------------------------------------- stages, one process


def test_stage_layout_and_names():
    full = list(make_model().state_dict())
    parts = [PipelineStage(make_model(), stage=s, n_stages=3) for s in range(3)]
    # 4 equal blocks, embeddings on stage 0 and ln_f/head on stage 2: two in the middle
    assert [p.layers for p in parts] == [(0, 1), (1, 3), (3, 4)]
    keys = [list(p.state_dict()) for p in parts]
    assert keys[0][:2] == ["tok_emb.weight", "pos_emb.weight"]
    assert {k.split(".")[1] for k in keys[1]} == {"1", "2"}
    assert keys[2][-3:] == ["ln_f.weight", "ln_f.bias", "head.weight"]
    assert sum(keys, []) == full  # the stages' names are the full model's, in order
    assert parts[0].tied_weight is parts[0].tok_emb.weight
    assert parts[2].tied_weight is parts[2].head.weight and parts[1].tied_weight is None
    # resharding: each stage keeps its part of a full state dict
    ref = {k: v.numpy() * 0 + i for i, (k, v) in enumerate(make_model().state_dict().items())}
    del ref["head.weight"]  # a tied checkpoint may store it once
    load_full_state_dict(parts[2], ref)
    assert (parts[2].head.weight.numpy() == ref["tok_emb.weight"]).all()
    assert (parts[2].ln_f.bias.numpy() == ref["ln_f.bias"]).all()


def test_one_stage_one_micro_batch_is_bitwise_the_reference():
    stage = PipelineStage(make_model())
    opt = make_optimizer(stage.parameters())
    losses = [train_step(stage, global_batch(s), opt, "1f1b", 1) for s in range(STEPS)]
    res = compare(losses, full_state_dict(stage), rtol=0.0)
    assert res["ok"], res


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_one_stage_micro_batches_equal_the_reference(kind):
    stage = PipelineStage(make_model())
    opt = make_optimizer(stage.parameters())
    losses = [train_step(stage, global_batch(s), opt, kind, 4) for s in range(STEPS)]
    res = compare(losses, full_state_dict(stage))
    assert res["ok"], res


def test_hooks_for_data_parallel():
    events = []

    class NoSync:
        def __enter__(self):
            events.append("no_sync")

        def __exit__(self, *exc):
            events.append("sync")

    stage = PipelineStage(make_model())
    x, y = global_batch(0)
    run_pipeline(stage, x, y, "1f1b", 4, no_sync=NoSync,
                 before_last_backward=lambda: events.append("last"))
    assert events == ["no_sync", "sync"] * 3 + ["last"]
    with pytest.raises(ValueError, match="batch of 8 rows does not split into 3"):
        run_pipeline(stage, x, y, "1f1b", 3)


# ---------------------------------------------------------------------------- MPI


def _check(res):
    assert res["ok"], res
    assert res["keys"] == list(make_model().state_dict())
    assert res["tied_equal"] and res["reload_equal"]
    assert res["eval_err"] <= 1e-9, res


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_pp2_equals_one_process(mpi, kind):
    res = mpi(2, "scripts.pp_train", kind, "4")
    _check(res)
    assert res["layers"] == [[0, 2], [2, 4]]
    assert res["peak_in_flight"] == ([4, 4] if kind == "gpipe" else [2, 1])


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_pp4_equals_one_process(mpi, kind):
    res = mpi(4, "scripts.pp_train", kind, "8")
    _check(res)
    assert res["layers"] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    # activation memory: GPipe keeps all 8 micro-batches alive, 1F1B at most pp - stage
    assert res["peak_in_flight"] == ([8] * 4 if kind == "gpipe" else [4, 3, 2, 1])


def test_dp2_pp2_equals_one_process(mpi):
    """Composition with data parallelism: each replica's pipeline runs half the batch,
    DataParallel's no_sync() covers all but the last micro-batch's backward."""
    res = mpi(4, "scripts.pp_train", "1f1b", "2", "2")
    _check(res)


def test_tp2_pp2_equals_one_process(mpi):
    """Composition with tensor parallelism: every stage's layers sharded over tp = 2, the
    loss vocab-parallel, the tied weight a vocab shard on the first and last stage."""
    res = mpi(4, "scripts.pp_train", "gpipe", "4", "1", "2")
    _check(res)


def test_dp2_tp2_pp2_equals_one_process(mpi):
    res = mpi(8, "scripts.pp_train", "1f1b", "2", "2", "2")
    _check(res)
