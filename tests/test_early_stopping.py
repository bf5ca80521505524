"""EarlyStopping (minilm/train/early_stopping.py): history, snapshots at improvements
only, a stop after `patience` epochs without one, min_delta."""

import pytest

from minilm.train.early_stopping import EarlyStopping


def test_snapshots_the_best_epoch_and_stops_after_patience():
    taken, logged = [], []
    epoch = {"n": 0}
    stopper = EarlyStopping(2, snapshot=lambda: taken.append(epoch["n"]) or epoch["n"],
                            log=logged.append)
    stops = []
    for n, loss in enumerate([3.0, 2.0, 2.5, 1.5, 1.5 - 1e-7, 1.6, 1.7, 0.1], start=1):
        epoch["n"] = n
        stops.append(stopper.update({"epoch": n, "val_loss": loss}))
        if stops[-1]:
            break
    # improvements at epochs 1, 2, 4; 5 is within min_delta of 1.5: not an improvement
    assert taken == [1, 2, 4] and stopper.best_state == 4 and stopper.best == 1.5
    assert stops == [False, False, False, False, False, True]  # 5 and 6 bad: stop at 6
    assert [r["epoch"] for r in stopper.history] == [1, 2, 3, 4, 5, 6] == [r["epoch"] for r in logged]


def test_patience_must_be_positive():
    with pytest.raises(ValueError, match="patience must be >= 1, got 0"):
        EarlyStopping(0, snapshot=dict)
