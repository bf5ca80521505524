"""Planted bugs in minilm/parallel that the MPI tests must catch (``tests/mutate.py
--area parallel``). Each is a realistic slip: a missing average, a collective left out,
a mask or an offset wrong, a resume that forgets part of its job. Several are invisible
with one process (a 1-rank communicator makes every collective the identity) or hidden
by clipping and AdamW (a constant factor on the gradient): the tests named here compare
gradients, not just losses, across real ranks."""

from tests.mutations import Mutation

DP = "minilm/parallel/data_parallel.py"
ZERO = "minilm/parallel/zero.py"
TP_MAP = "minilm/parallel/tensor_parallel/mappings.py"
TP_LAYERS = "minilm/parallel/tensor_parallel/layers.py"
TP_CE = "minilm/parallel/tensor_parallel/cross_entropy.py"
PP = "minilm/parallel/pipeline.py"
ENGINE = "minilm/parallel/engine.py"
TRAINER = "minilm/train/parallel_trainer.py"  # the ParallelTrainer's hooks
LOOP = "minilm/train/trainer.py"  # the Trainer's resume, shared by every grid
COMM = "minilm/parallel/comm.py"

T_DP = "tests/mpi/test_data_parallel.py"
T_ENGINE = "tests/mpi/test_engine.py"
T_TP = "tests/mpi/test_tensor_parallel.py"
T_PP = "tests/mpi/test_pipeline.py"
T_LAYOUT = "tests/mpi/test_checkpoint_layout.py"


def engine(case: str) -> str:
    return f"{T_ENGINE}::test_engine_gradients_and_training_equal_one_process[{case}]"


def kill(grid: str) -> str:
    return f"{T_LAYOUT}::test_a_kill_while_checkpointing_leaves_a_set_that_resumes_exactly[{grid}]"


def resume(grid: str) -> str:
    return f"{T_ENGINE}::test_parallel_resume_equals_the_uninterrupted_run[{grid}]"


TP_GRADCHECK = f"{T_TP}::test_tp_gradients_across_two_ranks_match_finite_differences"
TP_OPS2 = f"{T_TP}::test_tp_layers_and_collectives_under_mpi[2]"

MUTATIONS = [
    # ------------------------------------------------------------------ data parallel
    Mutation(
        name="data parallel: summed gradients not divided by dp (no 1/dp average)",
        file=DP,
        old="buf *= 1.0 / self.comm.size",
        new="buf *= 1.0",
        tests=[f"{T_DP}::test_buckets_are_reduced_during_backward_only_with_overlap[True]",
               f"{T_DP}::test_no_sync_accumulates_locally_and_the_next_backward_reduces_the_sum",
               engine("dp2"), engine("dp2-tp2")],
    ),
    Mutation(
        name="data parallel: the averaged buckets are never written back (each rank keeps "
             "its own gradient: 'never reduced')",
        file=DP,
        old="for j, p in enumerate(bucket.params):",
        new="for j, p in enumerate(bucket.params[:0]):",
        tests=[f"{T_DP}::test_buckets_are_reduced_during_backward_only_with_overlap[True]",
               f"{T_DP}::test_buckets_are_reduced_during_backward_only_with_overlap[False]",
               f"{T_DP}::test_no_sync_accumulates_locally_and_the_next_backward_reduces_the_sum",
               engine("dp2")],
    ),
    Mutation(
        name="data parallel: the 'has a gradient' flag never set (every parameter looks "
             "gradient-free, keeps its local gradient)",
        file=DP,
        old="self.buf[self.numel + j] = 1",
        new="self.buf[self.numel + j] = 0",
        tests=[f"{T_DP}::test_buckets_are_reduced_during_backward_only_with_overlap[True]",
               f"{T_DP}::test_unused_parameters_keep_no_grad_and_forgetting_finish_is_caught",
               engine("dp2")],
    ),
    Mutation(
        name="data parallel fp16: buckets not scaled by 1/dp before the cast",
        file=DP,
        old="np.multiply(bucket.buf, 1.0 / self.comm.size, out=bucket.buf)",
        new="np.multiply(bucket.buf, 1.0, out=bucket.buf)",
        tests=[f"{T_DP}::test_fp16_compression_rounds_each_bucket_to_half_precision",
               f"{T_DP}::test_fp16_without_a_float16_mpi_sum_falls_back_to_allgather",
               f"{T_DP}::test_dp2_fp16_compression_within_error_bound"],
    ),
    Mutation(
        name="local SGD: parameters summed instead of averaged",
        file=DP,
        old="flat *= 1.0 / comm.size",
        new="flat *= 1.0",
        tests=[f"{T_DP}::test_local_sgd_every_step_equals_data_parallel"],
    ),
    Mutation(
        name="abort handler not installed: an exception on one rank leaves the others "
             "waiting in a collective (the test fails on its 60 s safety timeout)",
        file=COMM,
        old="    sys.excepthook = hook",
        new="    pass",
        tests=[f"{T_DP}::test_an_exception_on_one_rank_aborts_the_job"],
    ),
    # ------------------------------------------------------------------ ZeRO
    Mutation(
        name="ZeRO: reduce-scattered gradient slice not divided by dp",
        file=ZERO,
        old="self._gshard *= 1.0 / W",
        new="self._gshard *= 1.0",
        tests=[engine("dp2-zero"), engine("dp2-pp2-zero-gpipe"),
               f"{T_DP}::test_zero1_adamw_equals_one_process"],
    ),
    Mutation(
        name="ZeRO: each shard's gradient pieces read one element off (rolled by one)",
        file=ZERO,
        old="sp.grad = Tensor._make(self._gshard[pc.a - self.lo:pc.b - self.lo])",
        new="sp.grad = Tensor._make(np.roll(self._gshard, 1)[pc.a - self.lo:pc.b - self.lo])",
        tests=[engine("dp2-zero"), engine("dp2-pp2-zero-gpipe"),
               f"{T_DP}::test_zero1_adamw_equals_one_process"],
    ),
    # ------------------------------------------------------------------ tensor parallel
    Mutation(
        name="tensor parallel: backward of copy_to_tp_region and reduce_from_tp_region "
             "swapped (copy passes g through, reduce allreduces it)",
        file=TP_MAP,
        old='''        if ctx.comm.is_single:
            return g, None
        return _allreduce(ctx.xp, g, ctx.comm), None


def copy_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Identity forward, allreduce-sum backward."""
    return CopyToTPRegion.apply(x, comm)


class ReduceFromTPRegion(Function):
    """Leaving the region with partial sums: y = allreduce_sum(x);  dx = g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        if comm.is_single:
            return x
        return _allreduce(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        return g, None''',
        new='''        return g, None


def copy_to_tp_region(x: Tensor, comm: Communicator) -> Tensor:
    """Identity forward, allreduce-sum backward."""
    return CopyToTPRegion.apply(x, comm)


class ReduceFromTPRegion(Function):
    """Leaving the region with partial sums: y = allreduce_sum(x);  dx = g."""

    is_view = True

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        if comm.is_single:
            return x
        return _allreduce(ctx.xp, x, comm)

    @staticmethod
    def backward(ctx, g):
        if ctx.comm.is_single:
            return g, None
        return _allreduce(ctx.xp, g, ctx.comm), None''',
        tests=[TP_GRADCHECK, TP_OPS2, engine("tp2")],
    ),
    Mutation(
        name="tensor parallel: row-parallel bias added on every rank before the reduce "
             "(counted tp times)",
        file=TP_LAYERS,
        old="y = reduce_from_tp_region(F.linear(x, self.weight), self.comm)",
        new="y = reduce_from_tp_region(F.linear(x, self.weight, self.bias), self.comm)\n"
            "        return y",
        tests=[TP_GRADCHECK, TP_OPS2, engine("tp2")],
    ),
    Mutation(
        name="vocab-parallel embedding: backward not masked to the rows this rank owns",
        file=TP_LAYERS,
        old="dw = ctx.backend.embedding_backward(local, g * own[..., None], ctx.rows)",
        new="dw = ctx.backend.embedding_backward(local, g, ctx.rows)",
        tests=[TP_GRADCHECK, TP_OPS2, engine("tp2")],
    ),
    Mutation(
        name="vocab-parallel embedding: ids not shifted by the shard's first row",
        file=TP_LAYERS,
        old="local = ids - start",
        new="local = ids",
        tests=[TP_OPS2, engine("tp2")],
    ),
    Mutation(
        name="vocab-parallel cross-entropy: targets not shifted by the shard's first id",
        file=TP_CE,
        old="local = target - start",
        new="local = target",
        tests=[TP_OPS2, engine("tp2")],
    ),
    # ------------------------------------------------------------------ pipeline
    Mutation(
        name="pipeline: micro-batch losses backpropagated without the 1/micro-batches "
             "scale (gradient M times too large, reported loss right)",
        file=PP,
        old="out.backward()",
        new="(out * M).backward()",
        tests=[engine("pp2-gpipe"), engine("pp2-1f1b"), engine("tp2-pp2")],
    ),
    Mutation(
        name="pipeline: tied embedding/head gradients not summed between first and last "
             "stage",
        file=PP,
        old="w.grad.data += _like(other, stage)",
        new="w.grad.data += 0 * _like(other, stage)",
        tests=[engine("pp2-1f1b"), f"{T_PP}::test_pp2_equals_one_process[gpipe]"],
    ),
    Mutation(
        name="pipeline: the input gradient sent back to the previous stage is zero",
        file=PP,
        old="g = x.grad.data if x.grad is not None else np.zeros(act_shape, dtype)",
        new="g = np.zeros(act_shape, dtype)",
        tests=[engine("pp2-gpipe"), f"{T_PP}::test_pp2_equals_one_process[1f1b]"],
    ),
    Mutation(
        name="pipeline: the gathered state dict keeps the last stage's copy of the tied "
             "head (stored twice: a checkpoint layout that depends on the grid)",
        file=PP,
        old="return tied_state_dict(full, stage.tied)",
        new="return full",
        tests=[f"{T_LAYOUT}::test_gathered_state_dict_has_the_one_process_layout[pp2]"],
    ),
    Mutation(
        name="pipeline: loading takes a checkpoint's head.weight as is, even when it "
             "differs from the tied embedding",
        file=PP,
        old="    state_dict = tied_state_dict(state_dict, stage.tied)\n",
        new="",
        tests=[f"{T_LAYOUT}::test_gathered_state_dict_has_the_one_process_layout[pp2]"],
    ),
    # ------------------------------------------------------------------ engine
    Mutation(
        name="engine: global gradient norm not summed over the tensor-parallel ranks",
        file=ENGINE,
        old="self.grid.tp_comm.allreduce(sq)",
        new="pass",
        tests=[engine("tp2"), engine("dp2-tp2"), engine("tp2-pp2")],
    ),
    Mutation(
        name="engine: global gradient norm not summed over the pipeline stages",
        file=ENGINE,
        old="self.grid.pp_comm.allreduce(sq)",
        new="pass",
        tests=[engine("pp2-gpipe"), engine("pp2-1f1b"), engine("tp2-pp2")],
    ),
    Mutation(
        name="engine: replicated gradients counted once per tensor-parallel rank in the norm",
        file=ENGINE,
        old="sq[1] /= self.grid.tp",
        new="sq[1] /= 1",
        tests=[engine("tp2"), engine("dp2-tp2")],
    ),
    Mutation(
        name="engine: the tied embedding/head weight counted on both pipeline ends in the "
             "norm",
        file=ENGINE,
        old="if p.grad is None or (tied is not None and p is tied and not self.stage.is_first):",
        new="if p.grad is None:",
        tests=[engine("pp2-gpipe"), engine("pp2-1f1b")],
    ),
    Mutation(
        name="engine: clipping applied when the norm is below the limit instead of above",
        file=ENGINE,
        old="if scale < 1.0:",
        new="if scale > 1.0:",
        tests=[engine("dp2"), engine("tp2")],
    ),
    Mutation(
        name="engine: every data-parallel replica takes the first replica's rows",
        file=ENGINE,
        old="return a[self.grid.dp_rank * n:(self.grid.dp_rank + 1) * n]",
        new="return a[0:n]",
        tests=[engine("dp2"), engine("dp2-zero")],
    ),
    Mutation(
        name="engine: reported loss not averaged over the data-parallel replicas",
        file=ENGINE,
        old="loss = float(out[0]) / self.grid.dp",
        new="loss = float(out[0])",
        tests=[engine("dp2"), engine("dp2-zero")],
    ),
    # ------------------------------------------------------------------ trainer
    Mutation(
        name="parallel trainer: resume keeps the metrics rows logged after the checkpoint "
             "(steps logged twice)",
        file=LOOP,
        old='row.get("step", 0) <= self.step]',
        new='row.get("step", 0) <= self.step + 10**9]',
        tests=[resume("dp2"), resume("tp2"), resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: resume on the same grid ignores the saved optimizer state",
        file=TRAINER,
        old='if extra.get("grid") != self._grid_dict():',
        new="if True:",
        tests=[resume("dp2"), resume("tp2"), resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: resume does not restore the data loader's position",
        file=LOOP,
        old='self.loader.load_state_dict(extra["rng"]["loader"])',
        new="pass",
        tests=[resume("dp2"), resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: resume does not restore the dropout RNG stream",
        file=LOOP,
        old="backend.set_rng_state(state)",
        new="pass",
        tests=[resume("dp2"), resume("tp2"), resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: every rank restores rank 0's dropout RNG state (pipeline "
             "stages draw different numbers of values)",
        file=TRAINER,
        old='return extra, opt_extra.get("rng_backend", rng)',
        new="return extra, rng",
        tests=[resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: resume does not restore the learning-rate schedule",
        file=TRAINER,
        old="extra = load_training_state(path, None, None, self.scheduler)",
        new="extra = load_training_state(path, None, None, None)",
        tests=[resume("dp2"), resume("pp2")],
    ),
    Mutation(
        name="parallel trainer: resume restarts the token count at 0",
        file=LOOP,
        old='self.tokens_seen = int(extra.get("tokens_seen", 0))',
        new="self.tokens_seen = 0",
        tests=[resume("dp2")],
    ),
    Mutation(
        name="parallel checkpoint: rank files not tagged with their step (a kill before the "
             "main file leaves new rank files under the published set's names)",
        file=TRAINER,
        old='tag = "" if step is None else f"step{step}-"',
        new='tag = ""',
        tests=[kill("dp2")],
    ),
    Mutation(
        name="parallel checkpoint: the old set's rank files removed before the new main "
             "file is published (a kill in between leaves no complete set)",
        file=TRAINER,
        old="        _publish(path, full, self.scheduler, dict(extra, optim_files=files), "
            "self.is_main)",
        new="        _remove_stale(path, [f[\"file\"] for f in files], w.rank, w.size, "
            "self.is_main)\n"
            "        _publish(path, full, self.scheduler, dict(extra, optim_files=files), "
            "self.is_main)",
        tests=[kill("dp2")],
    ),
    Mutation(
        name="parallel checkpoint: resume does not check that the rank files hold the main "
             "file's step",
        file=TRAINER,
        old='if int(opt_extra.get("step", -1)) != step:',
        new="if False:",
        tests=[kill("dp2")],
    ),
]
