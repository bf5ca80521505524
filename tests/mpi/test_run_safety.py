"""Run safety under MPI (issue 10): a stop signal that reaches one rank only stops every
rank after the same step with one consistent checkpoint set (which resumes), without a
hang; a non-finite gradient on one rank only is skipped (or refused) on every rank
alike, parameters and optimizer state exactly unchanged (dp=2, dp=2 with ZeRO
reducing the gradients itself, pp=2)."""

import pytest

K = 3


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(mpi, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    res = mpi(2, "scripts.signal_stop", str(tmp_path / "run"), str(corpus), str(K),
              timeout=60)
    views = res["views"]
    assert [v.get("step") for v in views] == [K, K], views  # rank 0 got no signal itself
    assert [v.get("code") for v in views] == [143, 143], views
    assert res["main_step"] == res["logged"] == K
    assert res["rank_steps"] == [K, K]  # the set: both ranks' optimizer files of step K
    assert res["resumed_to"] == K + 2
    assert res["log_steps"] == list(range(1, K + 3))


CASES = {  # name: (dp, pp, zero, clip)
    "dp2": (2, 1, 0, 1.0),
    "dp2-zero": (2, 1, 1, 0.0),  # no DataParallel: each replica sees only its gradient
    "pp2": (1, 2, 0, 0.0),
}


@pytest.mark.parametrize("mode", ["skip", "raise"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_nonfinite_gradient_on_one_rank_is_skipped_on_every_rank(mpi, case, mode):
    dp, pp, zero, clip = CASES[case]
    res = mpi(2, "scripts.nonfinite_step", str(dp), str(pp), str(zero), str(clip), mode,
              timeout=60)
    for v in res["views"]:
        assert v["unchanged"] is True, v  # the bad step changed nothing, on every rank
        assert v["moved_after"] is True, v  # and the next one trained again
        assert v["reason"][0] == "gradient norm", v  # the same decision on every rank
        assert v["skipped"] == 1 and v["dp_identical"], v
        if mode == "raise":
            assert [r[0] for r in v["raised"]] == [1], v
            assert "gradient norm" in v["raised"][0][1]
        else:
            assert v["raised"] == [], v
