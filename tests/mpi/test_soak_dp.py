"""Kill-and-resume soak on a process grid (issue 10): ``mpiexec -n 2 python -m minilm
train --dp 2`` killed with SIGKILL three times at drawn steps (both ranks killed, as an
OOM killer or a dying node would), resumed with ``--resume`` each time, ends with the
same weights, schedule, RNG states and per-rank optimizer files as an uninterrupted run,
and the same metrics.jsonl with no step logged twice. The driver is tests/test_soak.py's
(one process there); the parallel checkpoint's files are one consistent set, so a kill
in the middle of writing them still resumes (tests/mpi/test_checkpoint_layout.py kills
at each moment of that write on purpose)."""

from tests.mpi.conftest import ROOT, mpiexec_or_fail
from tests.test_soak import KILLS, soak


def test_dp2_run_killed_three_times_ends_as_the_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    launcher = [mpiexec_or_fail(), "-n", "2"]
    got = soak(tmp_path, launcher, seed=20, killed_status=lambda rc: rc != 0,
               extra=["--dp", "2"])
    assert len(got["kill_steps"]) == KILLS
