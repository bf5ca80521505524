"""Spawn ``mpiexec`` (from the installed ``mpich`` wheel) on the scripts of this folder.

``make test`` installs mpi4py and mpich (``pip install -e .[mpi]``), so a missing or
broken MPI is a failure with the reason, never a skip: a skipped MPI test would hide
every parallel bug."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "`make test` installs it with pip install -e '.[mpi]' (mpi4py and mpich)"


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def mpiexec_or_fail() -> str:
    """The mpiexec to use; fails the test (with the reason and the fix) when mpi4py is
    not importable or there is no mpiexec."""
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"mpi4py is not importable: {exc}; {INSTALL_HINT}", pytrace=False)
    exe = _mpiexec()
    if exe is None:
        pytest.fail(f"mpiexec not found next to {sys.executable} nor on PATH; {INSTALL_HINT}",
                    pytrace=False)
    return exe


def mpi_env(**extra: str) -> dict:
    """One thread per rank, the NumPy reference backend, the repository importable."""
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                NUMBA_NUM_THREADS="1", MINILM_BACKEND="numpy", PYTHONPATH=str(ROOT), **extra)


def run_mpi(n: int, module: str, *args: str, timeout: float = 240) -> dict:
    """Run ``python -m tests.mpi.<module> args`` on ``n`` ranks; return rank 0's RESULT
    JSON. Fails with the full output when the job fails or prints no result."""
    exe = mpiexec_or_fail()
    cmd = [exe, "-n", str(n), sys.executable, "-m", f"tests.mpi.{module}", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                       timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{out[-6000:]}")
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise AssertionError(f"{' '.join(cmd)} printed no RESULT line:\n{out[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture
def mpi():
    mpiexec_or_fail()
    return run_mpi
