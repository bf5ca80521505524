"""Planted bugs in resuming a run (trainer, optimizer, schedule, RNG, data position,
checkpoint files) and in the Functions the attention and dtype/backend moves add to
the graph (_Rotate, _SplitHeads, Cast, ToBackend)."""

from tests.mutations import Mutation

_RESUME = "tests/test_resume.py::test_resume_after_a_crash_reproduces_the_full_state_bit_for_bit"
_CLI = "tests/test_resume.py::test_cli_resume_after_a_crash_equals_the_uninterrupted_run"
_CKPT_GPT = "tests/test_checkpoint.py::test_resume_real_gpt_adamw_scheduler_is_exact"
_SIGKILL = "tests/test_checkpoint.py::test_sigkill_during_save_leaves_a_loadable_checkpoint"
_ATT = "tests/test_attention_functions.py::"
_CAST = "tests/test_cast_to_backend.py::"


def _both(test: str) -> list[str]:
    return [f"{test}[numpy]", f"{test}[numba]"]


MUTATIONS = [
    # ------------------------------------------------------------------ the trainer
    Mutation(
        name="resume: the trainer's step counter is not restored (wrong key, starts at 0)",
        file="minilm/train/trainer.py",
        old='self.step = int(extra["step"])',
        new='self.step = int(extra.get("steps", 0))',
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: tokens_seen is not restored (logged token counts restart)",
        file="minilm/train/trainer.py",
        old='self.tokens_seen = int(extra.get("tokens_seen", 0))',
        new='self.tokens_seen = int(extra.get("tokens", 0))',
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: the best validation loss is forgotten (best.safetensors / early "
             "stopping restart)",
        file="minilm/train/trainer.py",
        old='self.best_val = math.inf if extra.get("best_val") is None else float(extra["best_val"])',
        new="self.best_val = math.inf",
        tests=_both(_RESUME),
    ),
    Mutation(
        name="resume: the backend RNG is not restored (dropout masks differ after resume)",
        file="minilm/train/trainer.py",
        old='return extra, extra["rng"]["backend"]',
        new="return extra, current_backend().get_rng_state()",
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: the loader position is not restored (the first batches are replayed)",
        file="minilm/train/trainer.py",
        old='self.loader.load_state_dict(extra["rng"]["loader"])',
        new="self.loader.state_dict()",
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: the loader saves the prefetch thread's position, not the consumer's "
             "(batches waiting in the queue are skipped)",
        file="minilm/data/loader.py",
        old='return {"source": copy.deepcopy(self._resume),',
        new='return {"source": copy.deepcopy(self.source.state_dict()),',
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: the schedule is stepped once more after loading (last_epoch off by one)",
        file="minilm/train/trainer.py",
        old='        self.bad_evals = int(extra.get("bad_evals", 0))\n',
        new='        self.bad_evals = int(extra.get("bad_evals", 0))\n'
            "        self.scheduler.step()  # re-apply the lr\n",
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    Mutation(
        name="resume: metrics.jsonl rows logged after the checkpoint are kept (redone steps "
             "logged twice)",
        file="minilm/train/trainer.py",
        old='row.get("step", 0) <= self.step]',
        new='row.get("step", 0) <= self.config.max_steps]',
        tests=[*_both(_RESUME), *_both(_CLI)],
    ),
    # ------------------------------------------------------------------ the optimizer
    Mutation(
        name="optimizer: scalar state (Adam's step count) restarts at 0 on load (the bias "
             "correction starts over)",
        file="minilm/optim/optimizer.py",
        old='numbers.Number)) and not hasattr(value, "shape"):\n        return value',
        new='numbers.Number)) and not hasattr(value, "shape"):\n        return 0',
        tests=[*_both(_RESUME), *_both(_CLI), *_both(_CKPT_GPT)],
    ),
    Mutation(
        name="optimizer: Adam's second moment is not restored (zeros after load)",
        file="minilm/optim/optimizer.py",
        old="return xp.array(value, dtype=p.dtype, copy=True)",
        new='return xp.zeros(p.shape, dtype=p.dtype) if key == "exp_avg_sq" '
            "else xp.array(value, dtype=p.dtype, copy=True)",
        tests=[*_both(_RESUME), *_both(_CLI), *_both(_CKPT_GPT)],
    ),
    # ------------------------------------------------------------------ checkpoint files
    Mutation(
        name="checkpoint: written in place, not to a temporary file renamed over the old one",
        file="minilm/train/checkpoint.py",
        old="tmp = os.path.join(tmp_dir, base)",
        new="tmp = path",
        tests=[f"{_SIGKILL}[{p}]" for p in ("empty", "header", "half", "last_byte")]
              + ["tests/test_checkpoint.py::test_failure_mid_write_keeps_previous_checkpoint"],
    ),
    # ------------------------------------------------------------------ attention Functions
    Mutation(
        name="_Rotate backward: rot^T with the wrong sign",
        file="minilm/nn/attention.py",
        old="xp.concatenate([u[..., h:], -u[..., :h]], axis=-1)",
        new="xp.concatenate([-u[..., h:], u[..., :h]], axis=-1)",
        tests=[_ATT + "test_rotate_is_the_rotary_formula_and_its_gradient",
               _ATT + "test_rotate_gradient_with_unrelated_cos_and_sin",
               _ATT + "test_rotary_embedding_module_angles_and_gradient[0]"],
    ),
    Mutation(
        name="_Rotate backward: rot^T(g) * sin instead of rot^T(g * sin) (equal while both "
             "halves of sin are equal, as in RotaryEmbedding)",
        file="minilm/nn/attention.py",
        old="u = g * sin",
        new="u = g * ctx.xp.concatenate([sin[..., h:], sin[..., :h]], axis=-1)",
        tests=[_ATT + "test_rotate_gradient_with_unrelated_cos_and_sin"],
    ),
    Mutation(
        name="_SplitHeads backward: the (B, h, T, d) gradient reshaped instead of transposed",
        file="minilm/nn/attention.py",
        old="g[:, :, i] = ctx.xp.swapaxes(gi, 1, 2)",
        new="g[:, :, i] = gi.reshape(B, T, H, d)",
        tests=[_ATT + "test_split_heads_with_all_sizes_different",
               _ATT + "test_split_heads_is_split_reshape_transpose_and_its_gradient"],
    ),
    # ------------------------------------------------------------------ Cast / ToBackend
    Mutation(
        name="Cast backward: the gradient is not cast back to the input's dtype (the engine "
             "hides it; only a direct look at the backward sees it)",
        file="minilm/functional/math.py",
        old="return g.astype(ctx.in_dtype), None",
        new="return g, None",
        tests=[_CAST + "test_cast_float32_input_to_float64_gradient_is_float32"],
    ),
    Mutation(
        name="ToBackend backward: the gradient is dropped",
        file="minilm/functional/math.py",
        old="return ctx.source.xp.asarray(src.to_numpy(g)), None",
        new="return None, None",
        tests=[_CAST + f"test_to_backend_between_cpu_backends[{d}-{s}]"
               for s in ("numpy", "numba") for d in ("numpy", "numba")],
    ),
]

# ---------------------------------------------------------------------- owned run directories
_RUN_DIR = "tests/test_run_dir.py::"
MUTATIONS += [
    Mutation(
        name="run dir: the lock is never taken (two writers)",
        file="minilm/train/run_dir.py",
        old="os.link(tmp, self.path)",
        new="os.replace(tmp, self.path)",
        tests=[_RUN_DIR + "test_a_live_lock_refuses_a_second_writer"],
    ),
    Mutation(
        name="run dir: a live lock counts as stale (taken over)",
        file="minilm/train/run_dir.py",
        old="if not _alive(pid):",
        new="if _alive(pid):",
        tests=[_RUN_DIR + "test_a_live_lock_refuses_a_second_writer",
               _RUN_DIR + "test_a_stale_lock_is_taken_over"],
    ),
    Mutation(
        name="run dir: train into an existing run is allowed (overwrites it)",
        file="minilm/train/run_dir.py",
        old="            if not overwrite:\n",
        new="            if False:\n",
        tests=[_RUN_DIR + "test_train_into_an_existing_run_is_refused_and_changes_nothing"],
    ),
    Mutation(
        name="resume: settings given again are not compared with the run's",
        file="minilm/run.py",
        old="    if diffs:\n",
        new="    if False:\n",
        tests=[_RUN_DIR + "test_resume_refuses_other_settings_and_lists_them"],
    ),
    Mutation(
        name="resume: changed training text is not noticed",
        file="minilm/run.py",
        old="if want is not None and want != data[\"sha256\"]:",
        new="if False:",
        tests=[_RUN_DIR + "test_resume_refuses_changed_data"],
    ),
    Mutation(
        name="resume: a longer run keeps the old LR schedule length",
        file="minilm/run.py",
        old="    scheduler.total_steps = max_steps\n",
        new="    pass\n",
        tests=[_RUN_DIR + "test_a_longer_resume_stretches_the_lr_schedule"],
    ),
    Mutation(
        name="run dir: a failed new run leaves its tokenizer behind",
        file="minilm/train/run_dir.py",
        old='for name in ("tokenizer.json", "tokens.bin", "tokens.bin.json"):',
        new='for name in ():',
        tests=[_RUN_DIR + "test_a_failed_first_run_leaves_nothing_behind"],
    ),
]
