"""Host-side workflows with their model on the device (the CuPy stand-in,
``fake_gpu``): NeuralTextClassifier (every kind) and EncoderTextClassifier train on the
device exactly as on the CPU, pretrain_gpt trains a device GPT, the stacking
meta-learner fits on the current backend, and a compressed (W8A8, calibrated) model
loads onto the device and computes what the CPU copy does; embedding neighbours / noise
take a device table, attention maps and viz.tiny_gpt_loss a device GPT. Their batches,
labels and features are built on the host and put on the model's backend."""

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
from minilm.nn.bert import BertConfig, BertModel
from minilm.train.encoder_classifier import EncoderTextClassifier, _Classifier
from minilm.train.text_classifier import NeuralTextClassifier, pretrain_gpt

pytestmark = pytest.mark.usefixtures("fake_gpu")

WORDS = "apple river stone cloud green paper light sound water fire".split()


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    texts = [" ".join([*rng.choice(WORDS, size=int(rng.integers(3, 7))),
                       "river" if c else "apple"]) for c in y]
    return texts, y


def _on_device(model):
    return all(type(t.data) is DeviceArray for t in model.parameters())


def _built_on_cpu(build, backend):
    """``build()`` run with the NumPy backend selected (weights drawn from the CPU
    generator, the same in both runs; manual_seed seeds every backend), moved to
    ``backend``, which is selected again."""
    ml.use_backend("numpy")
    try:
        model = build()
    finally:
        ml.use_backend(backend)
    return model.to(backend)


def _fit(make, backend):
    """History and final scores of ``make()``'s classifier trained with ``backend``
    selected, its model built on the CPU and moved there (``_built_on_cpu``)."""
    ml.use_backend(backend)
    clf = make()
    build = clf._build
    clf._build = lambda: _built_on_cpu(build, backend)
    x, y = _texts(24, 0)
    xv, yv = _texts(8, 1)
    hist = clf.fit(x, y, xv, yv, epochs=2, patience=5)
    assert _on_device(clf.model) == (backend == "cupy")
    return hist, clf.scores(xv), clf


@pytest.mark.parametrize("kind", ["lstm", "textcnn", "transformer", "gpt"])
def test_text_classifier_trains_on_the_device_like_the_cpu(kind):
    def make():
        return NeuralTextClassifier(kind, 2, lr=1e-2, dim=8, max_len=10, batch_size=8,
                                    min_count=1, dropout=0.0, n_layers=1, n_heads=2,
                                    l1=1e-3)

    cpu, s_cpu, _ = _fit(make, "numpy")
    dev, s_dev, clf = _fit(make, "cupy")
    for a, b in zip(dev, cpu, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    np.testing.assert_allclose(s_dev, s_cpu, rtol=1e-9, atol=1e-12)
    assert clf.sparsity()["l1_weights_count"] > 0  # read through host copies


def test_pretrain_gpt_on_the_device():
    ml.use_backend("cupy")
    texts, _ = _texts(40, 2)
    _, gpt, hist = pretrain_gpt(texts, max_len=8, dim=8, n_layers=1, n_heads=2, steps=3,
                                batch_size=4, min_count=1, log_every=1)
    assert _on_device(gpt) and len(hist) == 3 and np.isfinite([r["loss"] for r in hist]).all()


class _Tokenizer:
    """What EncoderTextClassifier reads of a tokenizer: encode and pad_id."""

    pad_id = 0

    def encode(self, text, max_length):
        return [1] + [2 + WORDS.index(w) for w in text.split()][: max_length - 2] + [12]


@pytest.mark.parametrize("mode", ["probe", "full"])
def test_encoder_classifier_trains_on_the_device_like_the_cpu(mode):
    out = []
    for backend in ("numpy", "cupy"):
        ml.manual_seed(0)
        cfg = BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=16,
                         max_position_embeddings=16, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
        c = EncoderTextClassifier(2, init="none", mode=mode, lr=1e-2, batch_size=8,
                                  max_len=12, dropout=0.0)
        c.model = _built_on_cpu(lambda cfg=cfg: _Classifier(BertModel(cfg), 2, 0.0).double(),
                                backend)
        c.tokenizer = _Tokenizer()
        x, y = _texts(24, 0)
        xv, yv = _texts(8, 1)
        hist = c.fit(x, y, xv, yv, epochs=2, patience=5)
        assert _on_device(c.model) == (backend == "cupy")
        out.append((hist, c.scores(xv)))
    (cpu, s_cpu), (dev, s_dev) = out
    for a, b in zip(dev, cpu, strict=True):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    np.testing.assert_allclose(s_dev, s_cpu, rtol=1e-9, atol=1e-12)


def test_stacking_fits_on_the_device_like_the_cpu(monkeypatch):
    from minilm import nn
    from minilm.train.ensembles import StackingClassifier

    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(3), 30) for _ in range(2)]
    y = rng.integers(0, 3, 30)
    linear, out = nn.Linear, []
    for backend in ("numpy", "cupy"):
        ml.use_backend(backend)  # the meta-learner is built on the current backend
        monkeypatch.setattr(nn, "Linear", lambda *a, b=backend, **k: _built_on_cpu(
            lambda: linear(*a, **k), b))
        st = StackingClassifier(steps=20).fit(probs, y)
        assert _on_device(st.model) == (backend == "cupy")
        out.append(st.predict_proba(probs))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-7)  # float32


def test_compressed_model_loads_onto_the_device(tmp_path):
    from minilm.nn import GPT, GPTConfig
    from minilm.quant import W8A8Linear, calibrate, quantize_model
    from minilm.train.compressed import load_compressed, save_compressed

    ml.manual_seed(0)
    cfg = GPTConfig(vocab_size=20, context_length=8, n_layers=1, n_heads=2, d_model=8)
    m = GPT(cfg).eval()
    quantize_model(m, factory=lambda lin: W8A8Linear.from_linear(lin, "tensor"))
    ids = np.random.default_rng(0).integers(0, 20, (2, 8))
    calibrate(m, [ids])  # input scales: buffers a fresh layer leaves unset
    path = tmp_path / "c.safetensors"
    save_compressed(path, m, {"model_config": cfg.to_dict()})
    cpu, _ = load_compressed(path)
    ml.use_backend("cupy")  # the model is rebuilt on the current backend
    dev, _ = load_compressed(path)
    for name, b in dev.named_buffers():
        if b is not None:
            assert type(b.data) is DeviceArray, name
    assert _on_device(dev)
    with ml.no_grad():
        np.testing.assert_allclose(dev(ids).numpy(), cpu(ids).numpy(), rtol=1e-6, atol=1e-7)


def test_embedding_neighbours_and_noise_from_a_device_embedding():
    from minilm.data.augment import EmbeddingNeighbours, embedding_noise

    e = np.random.default_rng(3).standard_normal((len(WORDS), 4))
    dev = ml.tensor(e).to("cuda")
    assert EmbeddingNeighbours(dev, WORDS, k=3)["river"] == \
        EmbeddingNeighbours(e, WORDS, k=3)["river"]
    x = dev.reshape(2, 5, 4)
    mask = ml.tensor(np.arange(10).reshape(2, 5) % 3 > 0).to("cuda")
    noisy = embedding_noise(x, 0.1, np.random.default_rng(0), mask=mask)
    want = embedding_noise(e.reshape(2, 5, 4), 0.1, np.random.default_rng(0),
                           mask=mask.numpy())
    assert type(noisy.data) is DeviceArray
    np.testing.assert_allclose(noisy.numpy(), want, rtol=1e-12)


def test_attention_maps_and_tiny_loss_of_a_device_gpt():
    from minilm.viz import attention_maps, tiny_gpt, tiny_gpt_loss

    ids = np.random.default_rng(4).integers(0, 20, (1, 6))
    cpu = tiny_gpt(0)
    dev = tiny_gpt(0).to("cuda")
    for a, b in zip(attention_maps(dev, ids), attention_maps(cpu, ids), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    _, loss = tiny_gpt_loss(dev)
    assert type(loss.data) is DeviceArray
    assert loss.item() == pytest.approx(tiny_gpt_loss(cpu)[1].item(), rel=1e-6)
