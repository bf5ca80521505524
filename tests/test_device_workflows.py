"""Training commands other than ``minilm train`` with ``--backend cupy`` on the CuPy
stand-in (``fake_gpu``): every micro-batch reaches the model on the device, and the run
ends with its files written from host copies."""

import json

import numpy as np
import pytest
from fake_cupy import DeviceArray

from minilm.cli import main
from minilm.nn.module import Module
from minilm.pretrain import load_mlm_run

pytestmark = pytest.mark.usefixtures("fake_gpu")

TEXT = ("The quick brown fox jumps over the lazy dog. Python is a programming language "
        "with classes, functions and modules. A function returns a value to its caller.")


@pytest.fixture
def devices(monkeypatch):
    """The device of the first parameter of every module called at top level."""
    seen = set()
    call = Module.__call__

    def spy(self, *args, **kw):
        p = next(iter(self.parameters()), None)
        if p is not None:
            seen.add((type(self).__name__, p.device, type(p.data) is DeviceArray))
        return call(self, *args, **kw)

    monkeypatch.setattr(Module, "__call__", spy)
    return seen


def test_pretrain_mlm_with_backend_cupy(tmp_path, devices):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join([TEXT] * 30))
    out = tmp_path / "mlm"
    assert main(["pretrain-mlm", "--out-dir", str(out), "--data", str(corpus),
                 "--vocab-size", "120", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
                 "--context-length", "16", "--batch-size", "4", "--eval-interval", "3",
                 "--ckpt-interval", "3", "--max-steps", "3", "--no-progress",
                 "--backend", "cupy"]) == 0
    assert {d for _, d, _ in devices} == {"cuda"} and all(ok for *_, ok in devices)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["val_loss"])
    model, tok, extra = load_mlm_run(out)
    assert extra["step"] == 3
