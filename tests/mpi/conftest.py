"""Spawn ``mpiexec`` (from the installed ``mpich`` wheel) on the scripts of this folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def run_mpi(n: int, module: str, *args: str, timeout: float = 240) -> dict:
    """Run ``python -m tests.mpi.<module> args`` on ``n`` ranks; return rank 0's RESULT
    JSON. Fails with the full output when the job fails or prints no result."""
    exe = _mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (pip install mpich mpi4py)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", MINILM_BACKEND="numpy", PYTHONPATH=str(ROOT))
    cmd = [exe, "-n", str(n), sys.executable, "-m", f"tests.mpi.{module}", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{out[-6000:]}")
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise AssertionError(f"{' '.join(cmd)} printed no RESULT line:\n{out[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture
def mpi():
    pytest.importorskip("mpi4py")
    return run_mpi
