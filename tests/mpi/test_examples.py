"""The parallel examples run (reduced) under mpiexec -n 2 and their loss goes down."""

import subprocess
import sys

import pytest

from tests.mpi.conftest import ROOT, mpi_env, mpiexec_or_fail


@pytest.mark.parametrize("script", ["data_parallel", "tensor_parallel", "pipeline_parallel"])
def test_example_runs(script):
    exe = mpiexec_or_fail()
    p = subprocess.run([exe, "-n", "2", sys.executable, f"examples/{script}.py", "--steps", "12"],
                       cwd=ROOT, env=mpi_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    losses = [float(line.split("loss ")[1].split()[0]) for line in p.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) >= 2 and losses[-1] < losses[0]


def test_parameter_server_example_runs_quick():
    exe = mpiexec_or_fail()
    p = subprocess.run([exe, "-n", "3", sys.executable, "examples/parameter_server.py",
                        "--quick"], cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout.lower()
    assert "allreduce" in out and "async" in out and "staleness" in out, p.stdout


def test_search_spreads_trials_over_ranks(tmp_path):
    """minilm search under mpiexec -n 3: rank 0 coordinates, two ranks train; every
    trial of the budget is in trials.jsonl, each once, and a resume runs none again."""
    import json

    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 80)
    cfg = tmp_path / "search.toml"
    cfg.write_text(f"""[search]
strategy = "random"
trials = 4
seed = 0

[space]
lr = {{type = "float", low = 1e-3, high = 1e-2, log = true}}

[model]
n_layers = 1
n_heads = 2
d_model = 16
context_length = 16

[train]
data = "{corpus}"
tokenizer = "char"
max_steps = 3
batch_size = 4
""")
    exe = mpiexec_or_fail()
    cmd = [exe, "-n", "3", sys.executable, "-m", "minilm", "search", "--config", str(cfg),
           "--out-dir", str(tmp_path / "s")]
    p = subprocess.run(cmd, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text()
            .splitlines() if line.strip()]
    trials = [r for r in rows if "trial" in r and r.get("status") == "ok"]
    assert sorted(r["trial"] for r in trials) == [0, 1, 2, 3]
    p = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=mpi_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    again = [json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text()
             .splitlines() if line.strip()]
    assert len([r for r in again if "trial" in r]) == len([r for r in rows if "trial" in r])
