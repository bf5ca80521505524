"""The issue-16 examples (and issue 15's mixed-precision one) run in CI in their
reduced form (--quick): each exits 0 and prints its result. (Their mechanics are
tested in their own files: test_gan.py, test_ensembles.py, test_continual.py,
test_search.py, test_multitask.py, test_curriculum.py, test_layer_sharing.py,
test_topk_attention.py, test_viz.py, test_amp.py; the parameter-server example runs
under mpiexec in tests/mpi/test_examples.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# example -> a piece of text its output must contain
EXAMPLES = {
    "gan_2d": "modes",
    "ensembles": "stacking",
    "continual_learning": "ewc",
    "hyperparameter_search": "best",
    "multitask": "uncertainty",
    "curriculum": "curriculum",
    "albert_sharing": "shared",
    "topk_attention": "\n  full ",  # the last row of the k table: every run finished
    "visualize": "wrote",
    "gpu_mixed_precision": "fp16 / float32 validation loss",
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_quick(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert EXAMPLES[name] in out.lower(), out[-4000:]
