"""One checkpoint layout whatever the grid: the gathered state dict of dp / tp / pp
grids equals the one-process GPT's state_dict() (keys, order, values, the tied head
stored once), and old pipeline checkpoints with a second copy of the head still load
(tests/mpi/scripts/ckpt_layout.py)."""

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
