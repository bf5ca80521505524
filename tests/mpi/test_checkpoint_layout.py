"""One checkpoint layout whatever the grid: the gathered state dict of dp / tp / pp
grids equals the one-process GPT's state_dict() (keys, order, values, the tied head
stored once), and old pipeline checkpoints with a second copy of the head still load
(tests/mpi/scripts/ckpt_layout.py). A parallel checkpoint is one consistent set of files
(the main file names its rank files): a kill at any moment of its writing leaves a set
that resumes exactly, and a broken set is refused with the files named."""

import pytest

GRIDS = {"pp2": (2, 1, 1, 2), "tp2": (2, 1, 2, 1), "dp2": (2, 2, 1, 1),
         "tp2-pp2": (4, 1, 2, 2)}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_gathered_state_dict_has_the_one_process_layout(mpi, tmp_path, grid):
    n, dp, tp, pp = GRIDS[grid]
    r = mpi(n, "scripts.ckpt_layout", str(dp), str(tp), str(pp), str(tmp_path))
    assert r["keys"] == r["ref_keys"]
    assert r["values_equal"] and r["head_is_embedding"]
    assert r["file"] == r["ref_file"]  # same stored tensors, head.weight an alias
    assert "model.head.weight" not in r["file"]["tensors"]
    assert r["old_layout_loads"]
    assert r["refused_on_every_rank"] and "head.weight" in r["refusal"], r["refusal"]


KILL_GRIDS = {"dp2": (2, 2, 1, 1), "pp2": (2, 1, 1, 2)}


def _set(step: int) -> list:
    return [f"ckpt.optim-step{step}-rank{r}-of-2.safetensors" for r in range(2)]


@pytest.mark.parametrize("grid", list(KILL_GRIDS))
def test_a_kill_while_checkpointing_leaves_a_set_that_resumes_exactly(mpi, tmp_path, grid):
    """Killed at the step-4 checkpoint after the rank files, before the main file
    names them (the step-2 set stays the checkpoint), or after the main file, before
    the step-2 files are removed (the step-4 set is): either resumes, and ends bitwise
    where the uninterrupted run ends (weights, each rank's optimizer state, schedule),
    with the same metrics.jsonl (no step twice) and the leftovers gone."""
    n, dp, tp, pp = KILL_GRIDS[grid]
    r = mpi(n, "scripts.ckpt_layout", "kill", str(dp), str(tp), str(pp), str(tmp_path))
    assert r["whole_files"] == _set(6) + ["ckpt.safetensors"]
    for case, resumed_at in (("before_main", 2), ("before_cleanup", 4)):
        got = r[case]
        assert got["killed"], case
        assert got["files_after_kill"] == _set(2) + _set(4) + ["ckpt.safetensors"], case
        assert got["resumed_at"] == resumed_at, case
        assert got["same_state"] and got["same_rows"], (case, got)
        assert got["files_at_end"] == r["whole_files"], case
    # a missing rank file: refused on every rank, with the file and the way out named
    missing = r["missing"]
    assert len(set(missing)) == 1 and "step6-rank1-of-2.safetensors is missing" in missing[0]
    assert "must sit beside ckpt.safetensors" in missing[0]
    assert "starts the optimizer afresh" in missing[0]
    assert r["one_process_resume"]  # what the message offers: the main file alone
    # an older version's set (un-tagged rank files, no list) resumes when its steps match
    assert r["legacy_files"] == ["ckpt.optim-rank0-of-2.safetensors",
                                 "ckpt.optim-rank1-of-2.safetensors", "ckpt.safetensors"]
    assert r["legacy_same_state"]
    mismatch = r["legacy_mismatch"]
    assert len(set(mismatch)) == 1 and "(step 4) cannot be resumed" in mismatch[0]
    assert "ckpt.optim-rank1-of-2.safetensors holds the optimizer state of step 6, not 4" \
        in mismatch[0]
