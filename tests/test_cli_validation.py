"""Every CLI flag and TOML key is checked before any work: one ``error:`` line naming the
flag or key, the value and what is allowed; exit code 2, no traceback, no files written."""

from __future__ import annotations

import pytest

from minilm.cli import main

CORPUS = "the quick brown fox jumps over the lazy dog.\n" * 40


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_validation")
    data = root / "corpus.txt"
    data.write_text(CORPUS)
    out = root / "run"
    rc = main(["train", "--out-dir", str(out), "--data", str(data), "--tokenizer", "char",
               "--n-layers", "2", "--n-heads", "2", "--d-model", "16", "--context-length", "16",
               "--max-steps", "2", "--eval-interval", "2", "--ckpt-interval", "2",
               "--eval-batches", "1", "--batch-size", "2", "--warmup-steps", "0",
               "--no-progress"])
    assert rc == 0
    return out


def _refused(capsys, argv, *must_contain):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for s in must_contain:
        assert s in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("flag, value", [
    ("--beam", "-1"), ("--top-p", "0"), ("--top-p", "1.5"), ("--temperature", "nan"),
    ("--temperature", "-1"), ("--temperature", "inf"), ("--top-k", "0"),
    ("--max-new-tokens", "-5"), ("--num-samples", "0"),
])
def test_sample_flag_refused(capsys, run_dir, flag, value):
    _refused(capsys, ["sample", "--out-dir", str(run_dir), flag, value], flag, value)


def test_sample_beam_slides_past_the_context(capsys, run_dir):
    # the README's `sample --beam 4` with the default --max-new-tokens 200 > context 16
    assert main(["sample", "--out-dir", str(run_dir), "--beam", "4"]) == 0
    out = capsys.readouterr().out
    assert "sample 1" in out and len(out) > 150


def test_sample_prompt_longer_than_context_refused(capsys, run_dir):
    _refused(capsys, ["sample", "--out-dir", str(run_dir), "--prompt", "the fox " * 10],
             "--prompt", "context length 16")


def test_sample_beam_within_context_runs(capsys, run_dir):
    assert main(["sample", "--out-dir", str(run_dir), "--beam", "2",
                 "--max-new-tokens", "5"]) == 0
    assert "sample 1" in capsys.readouterr().out


def test_sample_temperature_zero_is_greedy(capsys, run_dir):
    assert main(["sample", "--out-dir", str(run_dir), "--temperature", "0",
                 "--max-new-tokens", "5"]) == 0


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--max-batches", "0")])
def test_eval_flag_refused(capsys, run_dir, flag, value):
    _refused(capsys, ["eval", "--out-dir", str(run_dir), flag, value], flag, value)


@pytest.mark.parametrize("flag, value", [
    ("--n-heads", "0"), ("--tp", "0"), ("--log-interval", "0"), ("--eval-interval", "0"),
    ("--ckpt-interval", "0"), ("--dtype", "float16"), ("--dtype", "int8"),
    ("--backend", "cupy"), ("--window", "0"), ("--window", "-3"), ("--d-ff", "0"),
    ("--grad-clip", "-1"), ("--lr", "nan"), ("--max-steps", "0"),
])
def test_train_flag_refused_before_any_file(capsys, tmp_path, flag, value):
    out = tmp_path / "run"
    _refused(capsys, ["train", "--out-dir", str(out), "--tokenizer", "char", flag, value],
             flag, value)
    assert not out.exists()


def test_unavailable_gpu_backend_says_what_is_missing(capsys, tmp_path):
    """--backend cupy where CuPy (or a device) is missing: the reason and the fix, not
    just the list of backends."""
    from minilm.backends import available_backends

    if "cupy" in available_backends():
        pytest.skip("the GPU backend is available here")
    out = tmp_path / "run"
    line = _refused(capsys, ["train", "--out-dir", str(out), "--backend", "cupy"],
                    "--backend", "not available on this machine")
    assert "CuPy" in line and "pip install 'minilm[cuda]'" in line
    assert not out.exists()


def test_min_lr_above_lr_refused(capsys, tmp_path):
    out = tmp_path / "run"
    _refused(capsys, ["train", "--out-dir", str(out), "--lr", "0.001", "--min-lr", "0.01"],
             "--min-lr", "0.01", "0.001")
    assert not out.exists()


@pytest.mark.parametrize("toml, key, shown", [
    ('[model]\nn_layers = "2"\n', "[model] n_layers", "'2'"),
    ('[train]\nlr = "fast"\n', "[train] lr", "'fast'"),
    ("model = 3\n", "[model]", "3"),
    ('[train]\nout_dir = ["a", "b"]\n', "[train] out_dir", "['a', 'b']"),
    ("[train]\nbatch_size = true\n", "[train] batch_size", "True"),
    ('[train]\ndtype = "float16"\n', "[train] dtype", "'float16'"),
    ("[model]\nwindow = 0\n", "[model] window", "0"),
])
def test_toml_value_refused(capsys, tmp_path, toml, key, shown):
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    out = tmp_path / "run"
    argv = ["train", "--config", str(cfg)]
    if "out_dir" not in toml:  # a flag would override the key under test
        argv += ["--out-dir", str(out)]
    _refused(capsys, argv, key, shown)
    assert not out.exists()


def test_toml_int_accepted_for_float(tmp_path):
    from minilm.train.config import merge_config

    _, cfg = merge_config({"train": {"lr": 1, "min_lr": 0}})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_trainconfig_built_in_python_gets_the_same_checks():
    from minilm.train.config import TrainConfig

    with pytest.raises(ValueError, match=r"TrainConfig.log_interval = 0: must be an integer >= 1"):
        TrainConfig(log_interval=0)
    with pytest.raises(ValueError, match=r"TrainConfig.dtype = 'float16'"):
        TrainConfig(dtype="float16")


def test_minilm_backend_env_naming_a_missing_backend(tmp_path):
    """MINILM_BACKEND=cupy on a machine without CuPy: `minilm info` still reports, and a
    command that needs the backend ends in one error line (exit 2) writing nothing."""
    import os
    import subprocess
    import sys

    from minilm.backends import available_backends

    if "cupy" in available_backends():
        pytest.skip("the GPU backend is available here")
    env = dict(os.environ, MINILM_BACKEND="cupy")
    info = subprocess.run([sys.executable, "-m", "minilm", "info"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "current backend: none (MINILM_BACKEND='cupy'" in info.stdout
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "minilm", "train", "--out-dir", str(out),
                            "--tokenizer", "char", "--max-steps", "1"], env=env,
                           capture_output=True, text=True, timeout=300)
    errors = [ln for ln in train.stderr.splitlines() if "error:" in ln]
    assert train.returncode == 2 and len(errors) == 1 and "Traceback" not in train.stderr
    assert "pip install 'minilm[cuda]'" in errors[0] and not out.exists()


def test_a_path_that_cannot_be_written_is_one_error_line(capsys, tmp_path):
    """An OSError (here: a file where a folder must be) ends in one error line, exit 2."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    _refused(capsys, ["viz", "--lr-schedules", str(blocker / "x.png")], str(blocker))
