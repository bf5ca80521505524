"""The parallel examples run (reduced) under mpiexec -n 2 and their loss goes down."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, _mpiexec


@pytest.mark.parametrize("script", ["data_parallel", "tensor_parallel", "pipeline_parallel"])
def test_example_runs(script):
    pytest.importorskip("mpi4py")
    exe = _mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MINILM_BACKEND="numpy")
    p = subprocess.run([exe, "-n", "2", sys.executable, f"examples/{script}.py", "--steps", "12"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    losses = [float(line.split("loss ")[1].split()[0]) for line in p.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) >= 2 and losses[-1] < losses[0]
