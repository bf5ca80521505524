"""One checkpoint layout whatever the grid:
``python -m tests.mpi.scripts.ckpt_layout DP TP PP OUT_DIR``; and one consistent set of
checkpoint files whatever the moment of a kill:
``python -m tests.mpi.scripts.ckpt_layout kill DP TP PP OUT_DIR`` (see :func:`kill_run`).

The ParallelEngine's gathered state dict (what ``ckpt.safetensors`` holds) has exactly
the keys, in the same order, and the values of the one-process GPT's ``state_dict()``,
with the tied head the very array of the embedding (as in one process, where both names
hold one Parameter), so the file stores it once: the same tensors and aliases as a
one-process checkpoint. A state dict of the old layout (a separate, equal
``head.weight``, as pipeline checkpoints used to store) still loads; a head that
differs from the embedding is refused on every rank."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors

from minilm.data import DataLoader, RandomWindowBatches
from minilm.parallel import ProcessGrid, install_abort_handler, world
from minilm.parallel.engine import ParallelEngine
from minilm.train import parallel_trainer
from minilm.train.checkpoint import flatten_state, load_checkpoint, unflatten_state
from minilm.train.config import TrainConfig
from minilm.train.parallel_trainer import ParallelTrainer
from minilm.train.trainer import Trainer
from minilm.train.training_state import save_training_state
from tests.mpi.common import CONFIG, make_model, report

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


def layout_run(dp: int, tp: int, pp: int, out: Path) -> None:
    """The gathered state dict and the file it is saved to have the one-process layout."""
    grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
    is_root = world().rank == 0
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


# ------------------------------------------------------------------ a kill in a checkpoint
STEPS = 6  # checkpoints at steps 2, 4, 6; the kills hit the one of step 4
TOKENS = np.random.default_rng(3).integers(0, CONFIG["vocab_size"], 3000).astype(np.uint16)


class Crash(Exception):
    """Stands for a kill at one moment of a checkpoint write (raised on every rank)."""


def parts(out: Path) -> tuple:
    """(model, loader, validation tokens, config), built afresh as a new job would
    (dropout on: its RNG must resume)."""
    cfg = TrainConfig(out_dir=str(out), batch_size=4, max_steps=STEPS, warmup_steps=1,
                      lr=3e-3, min_lr=3e-4, eval_interval=2, eval_batches=2, ckpt_interval=2,
                      log_interval=1, progress=False, plot=False)
    loader = DataLoader(RandomWindowBatches(TOKENS[:2700], 4, CONFIG["context_length"], rng=7),
                        prefetch=0)
    return make_model(dropout=0.1), loader, TOKENS[2700:], cfg


def make_trainer(out: Path, grid: ProcessGrid) -> ParallelTrainer:
    model, loader, val, cfg = parts(out)
    return ParallelTrainer(ParallelEngine(model, grid, lr=cfg.lr), loader, val, cfg)


def flat(t: ParallelTrainer) -> tuple:
    """(tensors, metadata) of the full model, schedule and this rank's optimizer state."""
    full = t.engine.full_state_dict()  # rank 0's; None on the others
    return flatten_state({"model": dict(full or {}),
                          "optimizer": t.optimizer.state_dict(),
                          "scheduler": t.scheduler.state_dict(), "step": t.step})


def same_everywhere(a: tuple, b: tuple) -> bool:
    """Bitwise the same state on this rank, and on every other (a collective)."""
    (ta, ma), (tb, mb) = a, b
    mine = bool(ma == mb and list(ta) == list(tb) and all(
        ta[k].dtype == tb[k].dtype and ta[k].tobytes() == tb[k].tobytes() for k in ta))
    return all(world().allgather_json(mine))


def ckpt_files(run: Path) -> list:
    return sorted(f.name for f in run.glob("ckpt*"))


def rows(run: Path) -> list:
    """metrics.jsonl without the timing column."""
    out = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in out]


def refusal(run: Path, grid: ProcessGrid) -> list:
    """Every rank's error message when resuming ``run`` (empty: it resumed)."""
    try:
        make_trainer(run, grid).resume(run / "ckpt.safetensors")
        msg = ""
    except ValueError as exc:
        msg = str(exc)
    return world().allgather_json(msg)


def kill_run(dp: int, tp: int, pp: int, out: Path) -> None:
    """A run killed (every rank raises :class:`Crash`) at the step-4 checkpoint, once
    after the rank files are written but before the main file names them, once after
    the main file is published but before the old set is removed: the files left are a
    complete set (step 2's, or step 4's), and resuming from them ends bitwise where the
    uninterrupted run ends, with the same metrics.jsonl and the same files. Then the
    refusals: a rank file missing (a one-process resume, which needs only the main file,
    still works), an older version's layout whose rank files do not match its main file
    (and the same layout when they do: it still resumes)."""
    grid = ProcessGrid(dp=dp, tp=tp, pp=pp)
    w = world()
    is_root = w.rank == 0
    res: dict = {}
    whole = make_trainer(out / "whole", grid)
    whole.fit()
    want = flat(whole)
    want_model = whole.engine.full_state_dict()  # rank 0's
    if is_root:
        res["whole_files"] = ckpt_files(out / "whole")

    for case, hook in (("before_main", "_publish"), ("before_cleanup", "_remove_stale")):
        run = out / case
        t = make_trainer(run, grid)
        real = getattr(parallel_trainer, hook)

        def dies(path, *args, real=real, t=t, hook=hook):
            if t.step == 4 and path.name == "ckpt.safetensors":
                raise Crash(f"killed in {hook} at step 4")
            return real(path, *args)

        setattr(parallel_trainer, hook, dies)
        try:
            t.fit()
            killed = False
        except Crash:
            killed = True
        finally:
            setattr(parallel_trainer, hook, real)
        w.barrier()
        got: dict = {"killed": all(w.allgather_json(killed))}
        if is_root:
            got["files_after_kill"] = ckpt_files(run)
        r = make_trainer(run, grid)
        r.resume(run / "ckpt.safetensors")
        got["resumed_at"] = r.step
        r.fit()
        got["same_state"] = same_everywhere(flat(r), want)
        if is_root:
            got["same_rows"] = rows(run) == rows(out / "whole")
            got["files_at_end"] = ckpt_files(run)
        res[case] = got

    # a rank file missing: every rank refuses, naming it
    run = out / "before_cleanup"
    gone = run / f"ckpt.optim-step{STEPS}-rank{w.size - 1}-of-{w.size}.safetensors"
    w.barrier()
    if is_root:
        gone.rename(run / "aside")
    w.barrier()
    res["missing"] = refusal(run, grid)
    if is_root:  # one process reads only the main file: the weights, a fresh optimizer
        plain = Trainer(*parts(run))
        plain.resume(run / "ckpt.safetensors")
        res["one_process_resume"] = bool(plain.step == STEPS and all(
            np.array_equal(v.numpy(), np.asarray(want_model[k]))
            for k, v in plain.model.state_dict().items()))
    w.barrier()

    # an older version's layout: un-tagged rank files, no list in the main file
    legacy = out / "legacy"
    if is_root:
        shutil.copytree(out / "whole", legacy)
        tensors, meta = load_checkpoint(legacy / "ckpt.safetensors")
        state = unflatten_state(tensors, meta)
        del state["extra"]["optim_files"]
        save_training_state(legacy / "ckpt.safetensors", _Snapshot(state["model"]), None,
                            _Snapshot(state["scheduler"]), state["extra"])
        for f in legacy.glob(f"ckpt.optim-step{STEPS}-*"):
            f.rename(legacy / f.name.replace(f"step{STEPS}-", ""))
        res["legacy_files"] = ckpt_files(legacy)
    w.barrier()
    old = make_trainer(legacy, grid)
    old.resume(legacy / "ckpt.safetensors")
    res["legacy_same_state"] = same_everywhere(flat(old), want)
    w.barrier()
    if is_root:  # its main file says step 4, its rank files hold step 6
        state["extra"]["step"] = 4
        save_training_state(legacy / "ckpt.safetensors", _Snapshot(state["model"]), None,
                            _Snapshot(state["scheduler"]), state["extra"])
    w.barrier()
    res["legacy_mismatch"] = refusal(legacy, grid)
    if is_root:
        report(res)


install_abort_handler()
if sys.argv[1] == "kill":
    kill_run(*(int(a) for a in sys.argv[2:5]), Path(sys.argv[5]))
else:
    layout_run(*(int(a) for a in sys.argv[1:4]), Path(sys.argv[4]))
