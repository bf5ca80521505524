"""The device path on the CuPy stand-in (``fake_gpu``: ``CupyBackend(xp=fake_cupy)``).

fake_cupy's arrays refuse to meet a host array in any op, as CuPy's do, so a place where
minilm quietly falls back to NumPy on the device path fails here with CuPy's TypeError,
on a machine without a GPU. The same checks run on a real GPU in tests/gpu.

Covered: moving tensors and modules (``.to``, ``.cpu``, ``.numpy``, ``.item``), a GPT's
loss and gradients equal to the CPU run (float64 to 1e-10, float32 to 1e-4), AdamW steps,
gradient clipping, GradScaler, dropout drawn on the device, checkpoints written from
the device and read on either side, the one-line error when a device tensor meets a host
one, the Trainer and ``minilm train --backend cupy`` end to end, ``device_batches``.
"""

import json

import numpy as np
import pytest
from fake_cupy import DeviceArray

import minilm as ml
import minilm.functional as F
from minilm import optim
from minilm.amp import GradScaler
from minilm.cli import main as cli
from minilm.data import CharTokenizer, DataLoader, RandomWindowBatches, split_tokens
from minilm.data.prefetch import device_batches
from minilm.nn import GPT, GPTConfig
from minilm.nn.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    SentenceEncoder,
)
from minilm.train.config import TrainConfig
from minilm.train.trainer import Trainer
from minilm.train.training_state import load_training_state, save_training_state

pytestmark = pytest.mark.usefixtures("fake_gpu")


def on_device(t):
    """``t`` (a Tensor or an array) lives on the stand-in device."""
    data = t.data if isinstance(t, ml.Tensor) else t
    return type(data) is DeviceArray


def gpt(dtype="float64", dropout=0.0, seed=0):
    ml.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=13, context_length=12, n_layers=2, n_heads=2, d_model=8,
                      dropout=dropout, positional="rope"))
    return m.double() if dtype == "float64" else m


def ids(seed=1, shape=(3, 7)):
    return ml.tensor(np.random.default_rng(seed).integers(0, 13, shape))


# ---------------------------------------------------------------------- moving data
def test_tensor_to_cuda_and_back():
    x = ml.tensor([[1.0, 2.0], [3.0, 4.0]])
    d = x.to("cuda")
    assert d.device == "cuda" and on_device(d) and d.backend.name == "cupy"
    assert x.device == "cpu"
    h = d.numpy()
    assert type(h) is np.ndarray and h.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert type(d.cpu().data) is np.ndarray and d.cpu().device == "cpu"
    assert (d * 2).sum().item() == 20.0 and isinstance((d * 2).sum().item(), float)
    assert d.tolist() == [[1.0, 2.0], [3.0, 4.0]] and "device='cuda'" in repr(d)


def test_to_is_differentiable_both_ways():
    x = ml.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = (x.to("cuda") * x.to("cuda")).sum()
    assert on_device(y)
    y.backward()
    assert x.grad.device == "cpu" and x.grad.numpy().tolist() == [2.0, -4.0, 6.0]


def test_module_to_moves_every_parameter_and_buffer():
    m = gpt()
    m.to("cuda")
    for name, t in m.state_dict().items():
        assert on_device(t), name
    m.to("cpu")
    assert all(type(t.data) is np.ndarray for t in m.state_dict().values())


def test_mixing_device_and_host_tensors_is_one_clear_error():
    d, h = ml.ones(3).to("cuda"), ml.ones(3)
    with pytest.raises(TypeError, match=r"^Add: tensors on cuda and cpu; move one with "
                                        r"\.to\(\.\.\.\)$"):
        d + h
    with pytest.raises(TypeError, match=r"^Matmul: tensors on cpu and cuda"):
        ml.ones((2, 3)) @ ml.ones((3, 2)).to("cuda")


# ---------------------------------------------------------------------- the model
def grads(m):
    return {n: p.grad.numpy() for n, p in m.named_parameters()}


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_gpt_loss_and_gradients_equal_the_cpu_run(dtype, tol):
    x, y = ids(1), ids(2)
    cpu = gpt(dtype)
    _, loss = cpu(x, y)
    loss.backward()
    dev = gpt(dtype).to("cuda")
    _, dloss = dev(x.to("cuda"), y.to("cuda"))
    assert on_device(dloss) and dloss.dtype == loss.dtype
    dloss.backward()
    np.testing.assert_allclose(dloss.item(), loss.item(), rtol=tol)
    want, got = grads(cpu), grads(dev)
    for name, p in dev.named_parameters():
        assert on_device(p.grad), name
        np.testing.assert_allclose(got[name], want[name], rtol=tol, atol=tol, err_msg=name)


def test_gpt_takes_device_ids_as_arrays():
    m = gpt().to("cuda")
    logits = m(ids(1).to("cuda").data)
    assert on_device(logits) and logits.shape == (3, 7, 13)


def train_steps(m, x, y, steps=3, clip=None, scaler=None):
    opt = optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    losses = []
    for _ in range(steps):
        _, loss = m(x, y)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        if clip:
            optim.clip_grad_norm_(m.parameters(), clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, opt


@pytest.mark.parametrize("clip", [None, 0.05])
def test_adamw_steps_with_and_without_clipping_equal_the_cpu_run(clip):
    x, y = ids(1), ids(2)
    cpu, dev = gpt(), gpt().to("cuda")
    want, _ = train_steps(cpu, x, y, clip=clip)
    got, opt = train_steps(dev, x.to("cuda"), y.to("cuda"), clip=clip)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert on_device(p)
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    assert all(on_device(v) for s in opt.state.values() for v in s.values()
               if hasattr(v, "shape") and v.ndim)


def test_clip_grad_norm_returns_the_norm_and_scales_on_device():
    p = ml.tensor([3.0, 4.0], requires_grad=True)
    d = p.to("cuda").detach().requires_grad_()
    (d * d).sum().backward()  # grad 2p = (6, 8), norm 10
    norm = optim.clip_grad_norm_([d], 5.0)
    assert norm == pytest.approx(10.0)
    assert on_device(d.grad)
    np.testing.assert_allclose(d.grad.numpy(), [3.0, 4.0], rtol=1e-6)


def test_grad_scaler_on_device_grads_skips_infs_and_equals_the_cpu_run():
    x, y = ids(1), ids(2)
    cpu, dev = gpt(), gpt().to("cuda")
    want, _ = train_steps(cpu, x, y, scaler=GradScaler(init_scale=2.0 ** 10))
    s = GradScaler(init_scale=2.0 ** 10)
    got, opt = train_steps(dev, x.to("cuda"), y.to("cuda"), scaler=s)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # a planted inf: the step is skipped, the scale halves, nothing moves
    _, loss = dev(x.to("cuda"), y.to("cuda"))
    s.scale(loss).backward()
    p = next(iter(dev.parameters()))
    p.grad.data[0] = np.inf
    before = {n: q.numpy().copy() for n, q in dev.named_parameters()}
    assert s.step(opt) is False
    s.update()
    assert s.get_scale() == 2.0 ** 9
    for n, q in dev.named_parameters():
        np.testing.assert_array_equal(q.numpy(), before[n], err_msg=n)


def test_dropout_draws_on_the_device_repeatably():
    x = ml.ones((4, 50)).to("cuda")
    ml.manual_seed(3)
    a = F.dropout(x, 0.5, training=True)
    ml.manual_seed(3)
    b = F.dropout(x, 0.5, training=True)
    assert on_device(a)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    kept = a.numpy() != 0
    assert 0.3 < kept.mean() < 0.7 and np.all(a.numpy()[kept] == 2.0)


def test_gpt_with_dropout_trains_on_the_device():
    m = gpt(dropout=0.2).to("cuda")
    losses, _ = train_steps(m, ids(1).to("cuda"), ids(2).to("cuda"))
    assert all(np.isfinite(losses))


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=1e-2), lambda ps: optim.Adagrad(ps, lr=0.1),
    lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5), lambda ps: optim.Adamax(ps, lr=1e-2),
], ids=["sgd", "adam", "adagrad", "rmsprop", "adamax"])
def test_every_optimizer_steps_on_the_device_as_on_cpu(make):
    x, y = ids(1), ids(2)
    runs = []
    for m, (a, b) in ((gpt(), (x, y)), (gpt().to("cuda"), (x.to("cuda"), y.to("cuda")))):
        opt = make(list(m.parameters()))
        ema = optim.EMA(m, decay=0.9)
        sched = optim.lr_scheduler.CosineWithWarmup(opt, warmup_steps=1, total_steps=3)
        for _ in range(3):
            m(a, b)[1].backward()
            optim.clip_grad_value_(m.parameters(), 0.05)
            opt.step()
            opt.zero_grad()
            sched.step()
            ema.update()
        runs.append((m, ema))
    (cpu, cpu_ema), (dev, dev_ema) = runs
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert on_device(p) and on_device(dev_ema.shadow[name])
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(dev_ema.shadow[name].get(), cpu_ema.shadow[name],
                                   rtol=1e-10, atol=1e-12, err_msg=name)


def test_activation_checkpointing_on_the_device_equals_the_cpu_run():
    x, y = ids(1), ids(2)
    cpu = gpt()
    cpu.config.checkpoint_activations = True
    cpu(x, y)[1].backward()
    dev = gpt().to("cuda")
    dev.config.checkpoint_activations = True
    dev(x.to("cuda"), y.to("cuda"))[1].backward()
    for name, g in grads(dev).items():
        np.testing.assert_allclose(g, grads(cpu)[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope"])
def test_models_built_on_the_device_backend_have_everything_there(positional):
    """Built after use_backend("cupy"): parameters and buffers (RoPE tables, sinusoids)
    are device arrays, and ids given as host arrays are uploaded."""
    ml.use_backend("cupy")
    m = GPT(GPTConfig(vocab_size=13, context_length=12, n_layers=1, n_heads=2, d_model=8,
                      positional=positional))
    for name, t in m.state_dict().items():
        assert on_device(t), name
    for name, t in m.named_buffers():
        assert on_device(t), name
    logits, loss = m(np.zeros((2, 5), dtype=np.int64), np.ones((2, 5), dtype=np.int64))
    assert on_device(logits) and on_device(loss)


def test_generate_and_beam_search_on_the_device_equal_the_cpu_run():
    from minilm.train.generation import beam_search, generate

    cpu, dev = gpt(), gpt().to("cuda")
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    for kw in ({"temperature": 0}, {"temperature": 1.0, "top_k": 5, "seed": 3},
               {"temperature": 0, "use_cache": False}):
        want = generate(cpu, prompt, 12, **kw)  # past the context: the cache is rebuilt
        got = generate(dev, prompt, 12, **kw)
        np.testing.assert_array_equal(got, want)
    want = beam_search(cpu, [1, 2, 3], 11, beam_width=3)
    got = beam_search(dev, [1, 2, 3], 11, beam_width=3)
    assert [s.tolist() for s, _ in got] == [s.tolist() for s, _ in want]
    np.testing.assert_allclose([sc for _, sc in got], [sc for _, sc in want], rtol=1e-10)


def test_bert_classifier_and_mlm_on_the_device_equal_the_cpu_run():
    cfg = BertConfig(vocab_size=11, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=6, max_position_embeddings=8, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    x = np.array([[2, 3, 4, 0], [5, 6, 0, 0]])
    mask = [[1, 1, 1, 0], [1, 1, 0, 0]]  # a list: put on the model's device by the model
    labels = np.array([[-100, 3, -100, -100], [5, -100, -100, -100]])
    for make, target in ((lambda: BertForSequenceClassification(cfg, 3), np.array([0, 2])),
                         (lambda: BertForMaskedLM(cfg), labels)):
        runs = []
        for to in ("cpu", "cuda"):
            ml.manual_seed(0)
            m = make().double().to(to)
            logits, loss = m(x, mask, labels=target)
            loss.backward()
            runs.append((m, logits, loss))
        (cpu, lc, c), (dev, ld, d) = runs
        assert on_device(ld) and on_device(d)
        np.testing.assert_allclose(d.item(), c.item(), rtol=1e-10)
        for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=name)
    ml.manual_seed(0)
    enc = SentenceEncoder(BertForSequenceClassification(cfg, 3).bert.double().to("cuda"))
    e = enc(x, mask)
    assert on_device(e) and e.shape == (2, 4)


def test_distillation_step_on_the_device_equals_the_cpu_run():
    from minilm.train.distill import distill_step

    x, y = ids(1).numpy(), ids(2).numpy()  # host arrays: put on the student's device
    losses = []
    for to in ("cpu", "cuda"):
        teacher, student = gpt(seed=1).to(to), gpt(seed=2).to(to)
        opt = optim.AdamW(student.parameters(), lr=1e-2)
        losses.append([distill_step(teacher, student, x, y, opt, grad_clip=1.0)
                       for _ in range(2)])
        assert all(on_device(p) == (to == "cuda") for p in student.parameters())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)


@pytest.mark.parametrize("kind", ["cnn", "transformer", "lstm"])
def test_text_classifiers_on_the_device_equal_the_cpu_run(kind):
    from minilm.nn.classifiers import RNNClassifier, TextCNN, TransformerEncoderClassifier

    make = {"cnn": lambda: TextCNN(20, 3, 6, num_filters=4, kernel_sizes=(2, 3), dropout=0),
            "transformer": lambda: TransformerEncoderClassifier(20, 3, max_len=8, d_model=8,
                                                                n_heads=2, n_layers=1,
                                                                dropout=0),
            "lstm": lambda: RNNClassifier(20, 3, 6, 5, cell="lstm", dropout=0)}[kind]
    x = [[1, 2, 3, 4, 0], [5, 6, 7, 0, 0]]
    mask = np.array(x) > 0
    out = []
    for to in ("cpu", "cuda"):
        ml.manual_seed(0)
        m = make().double().to(to)
        loss = F.cross_entropy(m(x, mask), ml.tensor([0, 2]).to(to))
        loss.backward()
        out.append((m, loss))
    (cpu, c), (dev, d) = out
    assert on_device(d)
    np.testing.assert_allclose(d.item(), c.item(), rtol=1e-10)
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_from_the_device_loads_on_cpu_and_back_exactly(tmp_path):
    x, y = ids(1), ids(2)
    dev = gpt().to("cuda")
    _, opt = train_steps(dev, x.to("cuda"), y.to("cuda"))
    save_training_state(tmp_path / "c.safetensors", dev, opt, extra={"step": 3})
    cpu = gpt(seed=9)
    cpu_opt = optim.AdamW(cpu.parameters(), lr=1e-2, weight_decay=0.1)
    assert load_training_state(tmp_path / "c.safetensors", cpu, cpu_opt)["step"] == 3
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert type(q.data) is np.ndarray
        np.testing.assert_array_equal(q.numpy(), p.numpy(), err_msg=name)
    # CPU -> device: weights and optimizer moments land on the device, and the next
    # steps on each side agree exactly
    back = gpt(seed=9).to("cuda")
    back_opt = optim.AdamW(back.parameters(), lr=1e-2, weight_decay=0.1)
    save_training_state(tmp_path / "h.safetensors", cpu, cpu_opt)
    load_training_state(tmp_path / "h.safetensors", back, back_opt)
    assert all(on_device(p) for p in back.parameters())
    for s in back_opt.state.values():
        for k, v in s.items():
            if hasattr(v, "ndim") and v.ndim:
                assert on_device(v), k
    more_cpu = _steps_with(cpu, cpu_opt, x, y)
    more_dev = _steps_with(back, back_opt, x.to("cuda"), y.to("cuda"))
    np.testing.assert_array_equal(more_dev, more_cpu)


def test_state_dicts_load_across_devices_in_memory():
    x, y = ids(1), ids(2)
    dev = gpt().to("cuda")
    _, dev_opt = train_steps(dev, x.to("cuda"), y.to("cuda"))
    cpu = gpt(seed=5)
    cpu_opt = optim.AdamW(cpu.parameters(), lr=1e-2, weight_decay=0.1)
    cpu.load_state_dict(dev.state_dict())
    cpu_opt.load_state_dict(dev_opt.state_dict())
    for (name, p), q in zip(dev.named_parameters(), cpu.parameters(), strict=True):
        assert type(q.data) is np.ndarray, name
        np.testing.assert_array_equal(q.numpy(), p.numpy(), err_msg=name)
    for s in cpu_opt.state.values():
        assert all(type(v) is np.ndarray for v in s.values() if hasattr(v, "ndim") and v.ndim)
    back = gpt(seed=6).to("cuda")
    back_opt = optim.AdamW(back.parameters(), lr=1e-2, weight_decay=0.1)
    back.load_state_dict(cpu.state_dict())
    back_opt.load_state_dict(cpu_opt.state_dict())
    assert all(on_device(p) for p in back.parameters())
    np.testing.assert_array_equal(_steps_with(back, back_opt, x.to("cuda"), y.to("cuda")),
                                  _steps_with(cpu, cpu_opt, x, y))


def _steps_with(m, opt, x, y, steps=2):
    out = []
    for _ in range(steps):
        _, loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


# ---------------------------------------------------------------------- data and Trainer
TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def test_device_batches_converts_tuples_and_dicts():
    backend = ml.get_backend("cupy")
    batches = [(np.arange(3), np.ones(2)), {"x": np.zeros(2), "y": np.ones((1, 2))}]
    out = list(device_batches(iter(batches), backend))
    assert isinstance(out[0], tuple) and all(on_device(a) for a in out[0])
    assert set(out[1]) == {"x", "y"} and all(on_device(a) for a in out[1].values())
    np.testing.assert_array_equal(out[0][0].get(), np.arange(3))
    cpu = ml.get_backend("numpy")
    same = list(device_batches(iter(batches), cpu))
    assert same[0][0] is batches[0][0]  # a CPU backend: passed through


def trainer_on_device(tmp_path, to="cuda", **kw):
    ml.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    train, val = split_tokens(np.asarray(tok.encode(TEXT), dtype=np.uint16), 0.1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, n_layers=1, n_heads=2,
                          d_model=16, dropout=0.1)).to(to)
    kw = {"max_steps": 4, **kw}
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=3, grad_accum_steps=2, warmup_steps=1,
                      eval_interval=2, eval_batches=2, ckpt_interval=2, log_interval=1,
                      progress=False, plot=False, lr=3e-3, grad_clip=0.5, **kw)
    loader = DataLoader(RandomWindowBatches(train, 3, 16, rng=7), prefetch=2)
    return Trainer(model, loader, val, cfg, tokenizer=tok)


@pytest.fixture
def batches_seen(monkeypatch):
    """Every micro-batch the Trainer computes a loss of, recorded (x, y)."""
    seen = []
    inner = Trainer._micro_loss

    def spy(self, x, y):
        seen.append((x, y))
        return inner(self, x, y)

    monkeypatch.setattr(Trainer, "_micro_loss", spy)
    return seen


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_trainer_runs_end_to_end_on_the_device(tmp_path, amp, batches_seen):
    t = trainer_on_device(tmp_path, amp=amp)
    last = t.fit()
    assert last["step"] == 4 and np.isfinite(last["val_loss"])
    assert all(on_device(p) for p in t.model.parameters())
    assert len(batches_seen) == 8 and all(on_device(x) and on_device(y) for x, y in batches_seen)
    # resume from the device checkpoint, as a new process would
    t2 = trainer_on_device(tmp_path, amp=amp)
    t2.resume(tmp_path / "ckpt.safetensors")
    assert t2.step == 4
    for p, q in zip(t.model.parameters(), t2.model.parameters(), strict=True):
        assert on_device(q)
        np.testing.assert_array_equal(q.numpy(), p.numpy())


def test_a_cpu_run_resumes_on_the_device_and_back(tmp_path, capsys):
    """The weights, moments and schedule continue exactly; the dropout stream cannot
    (NumPy's PCG64 on the host, the counter generator on the device): a note says so."""
    cpu = trainer_on_device(tmp_path, to="cpu")
    cpu.fit()
    dev = trainer_on_device(tmp_path)
    dev.resume(tmp_path / "ckpt.safetensors")
    assert "dropout" in capsys.readouterr().out
    for p, q in zip(cpu.model.parameters(), dev.model.parameters(), strict=True):
        assert on_device(q)
        np.testing.assert_array_equal(q.numpy(), p.numpy())
    dev.config.max_steps = 6
    dev.fit()
    back = trainer_on_device(tmp_path, to="cpu", max_steps=6)
    back.resume(tmp_path / "ckpt.safetensors")
    assert back.step == 6 and "dropout" in capsys.readouterr().out


def test_cli_train_with_backend_cupy(tmp_path, batches_seen, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    config = tmp_path / "run.toml"
    config.write_text("[train]\nplot = false\n")
    out = tmp_path / "run"
    assert cli(["train", "--config", str(config), "--data", str(corpus), "--tokenizer", "char",
                "--n-layers", "1", "--n-heads", "2", "--d-model", "16",
                "--context-length", "16", "--batch-size", "3", "--max-steps", "3",
                "--eval-interval", "3", "--eval-batches", "2", "--dropout", "0.1",
                "--backend", "cupy", "--no-progress", "--out-dir", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["val_loss"])
    assert len(batches_seen) == 3 and all(on_device(x) and on_device(y) for x, y in batches_seen)
    # sampling and evaluation of the run with the GPU selected (MINILM_BACKEND=cupy)
    ml.use_backend("cupy")
    devices = set()
    forward = GPT.forward

    def spy(self, *args, **kw):
        devices.add(self.tok_emb.weight.device)
        return forward(self, *args, **kw)

    monkeypatch.setattr(GPT, "forward", spy)
    assert cli(["sample", "--out-dir", str(out), "--prompt", "the ", "--max-new-tokens", "8",
                "--checkpoint", "last"]) == 0
    assert cli(["sample", "--out-dir", str(out), "--prompt", "the ", "--max-new-tokens", "4",
                "--beam", "2"]) == 0
    assert cli(["eval", "--out-dir", str(out), "--batch-size", "2", "--max-batches", "2"]) == 0
    assert devices == {"cuda"}
