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
