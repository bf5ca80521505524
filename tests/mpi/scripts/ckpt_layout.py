"""One checkpoint layout whatever the grid:
``python -m tests.mpi.scripts.ckpt_layout DP TP PP OUT_DIR``.

The ParallelEngine's gathered state dict (what ``ckpt.safetensors`` holds) has exactly
the keys, in the same order, and the values of the one-process GPT's ``state_dict()``,
with the tied head the very array of the embedding (as in one process, where both names
hold one Parameter), so the file stores it once: the same tensors and aliases as a
one-process checkpoint. A state dict of the old layout (a separate, equal
``head.weight``, as pipeline checkpoints used to store) still loads; a head that
differs from the embedding is refused on every rank."""

import sys
from pathlib import Path

import numpy as np
import safetensors

from minilm.parallel import ProcessGrid, install_abort_handler, world
from minilm.parallel.engine import ParallelEngine
from minilm.train.training_state import save_training_state
from tests.mpi.common import make_model, report

install_abort_handler()
dp, tp, pp = (int(a) for a in sys.argv[1:4])
out = Path(sys.argv[4])
grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
is_root = world().rank == 0

# a full state dict with every value distinct from the model's initial one
reference = make_model()
rng = np.random.default_rng(7)
state = {k: v.numpy() + rng.standard_normal(v.shape) for k, v in reference.state_dict().items()
         if k != "head.weight"}
state["head.weight"] = state["tok_emb.weight"]  # tied: one array, as in one process
reference.load_state_dict(state)
ref = {k: v.numpy() for k, v in reference.state_dict().items()}


class _Snapshot:
    def __init__(self, sd: dict) -> None:
        self.sd = sd

    def state_dict(self) -> dict:
        return self.sd


def file_layout(path: Path) -> dict:
    with safetensors.safe_open(str(path), "np") as f:
        return {"tensors": sorted(f.keys()), "aliases": f.metadata().get("minilm_aliases")}


res: dict = {}
engine = ParallelEngine(make_model(), grid)
engine.load_full_state_dict(state)
full = engine.full_state_dict()
if is_root:
    res["keys"] = list(full)
    res["ref_keys"] = list(ref)
    res["values_equal"] = bool(list(full) == list(ref) and all(
        np.array_equal(np.asarray(full[k]), ref[k]) for k in ref))
    res["head_is_embedding"] = full["head.weight"] is full["tok_emb.weight"]
    save_training_state(out / "grid.safetensors", _Snapshot(full))
    save_training_state(out / "one.safetensors", reference)
    res["file"], res["ref_file"] = (file_layout(out / "grid.safetensors"),
                                    file_layout(out / "one.safetensors"))

# the old layout: the last stage's copy of the tied weight stored as its own tensor
old = dict(state)
old["head.weight"] = state["tok_emb.weight"].copy()
fresh = ParallelEngine(make_model(), grid)
fresh.load_full_state_dict(old)
again = fresh.full_state_dict()
if is_root:
    res["old_layout_loads"] = bool(list(again) == list(ref) and all(
        np.array_equal(np.asarray(again[k]), ref[k]) for k in ref))

# a head that is not the embedding: refused (every rank raises, nothing is loaded)
bad = dict(old)
bad["head.weight"] = old["head.weight"] + 1.0
try:
    fresh.load_full_state_dict(bad)
    refused = ""
except ValueError as exc:
    refused = str(exc)
flags = world().allgather_json(bool(refused))
if is_root:
    res["refused_on_every_rank"] = all(flags)
    res["refusal"] = refused
    report(res)
