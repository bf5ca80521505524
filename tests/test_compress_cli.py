"""``minilm quantize`` / ``prune`` / ``low-rank`` on a tiny trained run (issue 11): each
method writes ``<run>/<tag>.safetensors``, which reloads bit for bit and which ``eval``
and ``sample`` read with ``--checkpoint <tag>``; bad arguments, an already compressed
source, an existing output and a damaged file are refused with one line, and the run's
own files never change."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import minilm as ml
from minilm.cli import main
from minilm.nn import GPT, GPTConfig
from minilm.quant import (
    LLMInt8Linear,
    W8A8Linear,
    calibrate,
    low_rank_model,
    magnitude_prune,
    quantize_model,
)
from minilm.train.compressed import load_compressed, save_compressed
from tests.test_cli_validation import _refused as refused

CORPUS = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n" * 30


def tree(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    data = root / "corpus.txt"
    data.write_text(CORPUS)
    out = root / "run"
    assert main(["train", "--out-dir", str(out), "--data", str(data), "--tokenizer", "char",
                 "--n-layers", "2", "--n-heads", "2", "--d-model", "64", "--context-length", "16",
                 "--max-steps", "30", "--eval-interval", "30", "--ckpt-interval", "30",
                 "--eval-batches", "2", "--batch-size", "8", "--warmup-steps", "2",
                 "--lr", "3e-3", "--no-progress"]) == 0
    return out


FAST = ["--eval-batches", "2", "--batch-size", "4"]


@pytest.mark.parametrize("argv, tag", [
    (["quantize", "--method", "int8"], "int8"),
    (["quantize", "--method", "int4"], "int4-g64"),
    (["quantize", "--method", "int4", "--group-size", "32"], "int4-g32"),
    (["quantize", "--method", "w8a8"], "w8a8"),
    (["quantize", "--method", "w8a8", "--act", "tensor", "--calib-batches", "2"], "w8a8-static"),
    (["quantize", "--method", "llm-int8"], "llm-int8"),
    (["quantize", "--method", "gptq", "--calib-batches", "2"], "gptq-int4-g64"),
    (["quantize", "--method", "gptq", "--bits", "8", "--calib-batches", "2"], "gptq-int8"),
    (["prune", "--sparsity", "0.5", "--fine-tune-steps", "3"], "pruned-50"),
    (["low-rank", "--rank", "8"], "low-rank-r8"),
    (["low-rank", "--energy", "0.9"], "low-rank-e0.9"),
])
def test_compress_command_writes_a_model_that_eval_and_sample_read(capsys, run, argv, tag):
    before = tree(run)
    assert main([argv[0], "--out-dir", str(run), *argv[1:], *FAST]) == 0
    out = capsys.readouterr().out
    assert f"written to {run / (tag + '.safetensors')}" in out and "perplexity" in out
    after = tree(run)
    assert {k: v for k, v in after.items() if k != f"{tag}.safetensors"} == before
    assert main(["eval", "--out-dir", str(run), "--checkpoint", tag, "--max-batches", "2"]) == 0
    assert main(["sample", "--out-dir", str(run), "--checkpoint", tag,
                 "--max-new-tokens", "5"]) == 0
    # an existing output is replaced only when asked
    refused(capsys, [argv[0], "--out-dir", str(run), *argv[1:], *FAST], "exists", "--overwrite")
    assert tree(run) == after


def test_quantized_int_weights_are_stored_as_integers(run, capsys):
    assert main(["quantize", "--out-dir", str(run), "--method", "int4", "--group-size", "16",
                 *FAST]) == 0
    model, extra = load_compressed(run / "int4-g16.safetensors")
    layer = model.blocks[0].mlp.fc
    assert layer.qweight.data.dtype == np.uint8  # packed two per byte
    assert layer.qweight.data.shape == (256, 32)
    assert extra["method"]["name"] == "int4" and extra["layers"]["blocks.0.mlp.fc"]["bits"] == 4


@pytest.mark.parametrize("argv, named", [
    (["quantize", "--method", "int4", "--group-size", "48"], "--group-size 48"),
    (["quantize", "--method", "int4", "--group-size", "0"], "--group-size 0"),
    (["quantize", "--method", "int8", "--bits", "4"], "--bits 4"),
    (["quantize", "--method", "gptq", "--bits", "3"], "--bits 3"),
    (["quantize", "--method", "w8a8", "--group-size", "32"], "--group-size"),
    (["quantize", "--method", "gptq", "--calib-batches", "0"], "--calib-batches"),
    (["prune", "--sparsity", "1.5"], "sparsity"),
    (["prune", "--sparsity", "nan"], "--sparsity"),
    (["prune", "--sparsity", "0.5", "--fine-tune-steps", "-1"], "--fine-tune-steps"),
    (["low-rank", "--rank", "0"], "rank"),
    (["low-rank", "--rank", "1000"], "rank"),
    (["low-rank", "--energy", "1.5"], "energy"),
])
def test_bad_arguments_are_refused_and_nothing_is_written(capsys, run, argv, named):
    before = tree(run)
    refused(capsys, [argv[0], "--out-dir", str(run), *argv[1:], *FAST], named)
    assert tree(run) == before


def test_an_already_compressed_source_is_refused(capsys, run):
    main(["quantize", "--out-dir", str(run), "--method", "int8", "--overwrite", *FAST])
    before = tree(run)
    refused(capsys, ["quantize", "--out-dir", str(run), "--checkpoint", "int8",
                     "--method", "int4", *FAST], "already compressed")
    refused(capsys, ["prune", "--out-dir", str(run), "--checkpoint", "int8",
                     "--sparsity", "0.5", *FAST], "already compressed")
    assert tree(run) == before


def test_a_damaged_compressed_file_is_refused_by_name(capsys, run, tmp_path):
    main(["quantize", "--out-dir", str(run), "--method", "int8", "--overwrite", *FAST])
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    f = copy / "int8.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    refused(capsys, ["eval", "--out-dir", str(copy), "--checkpoint", "int8"], "int8.safetensors")
    refused(capsys, ["sample", "--out-dir", str(copy), "--checkpoint", "missing"],
            "no such checkpoint", "int8")
    # a layer list that does not describe the tensors (another bit width)
    model, extra = load_compressed(run / "int8.safetensors")
    extra = dict(extra)
    from minilm.train import compressed

    bad = copy / "bad.safetensors"
    save_compressed(bad, model, {k: v for k, v in extra.items() if k != "layers"})
    import json

    from minilm.train.checkpoint import load_checkpoint, save_checkpoint
    tensors, meta = load_checkpoint(bad)
    text = json.dumps(meta).replace('"bits", 8', '"bits", 4')
    assert text != json.dumps(meta)
    save_checkpoint(bad, tensors, json.loads(text))
    with pytest.raises(ValueError, match="bad.safetensors"):
        compressed.load_compressed(bad)
    refused(capsys, ["eval", "--out-dir", str(copy), "--checkpoint", "bad"], "bad.safetensors")


# ----------------------------------------------------------------------------- bit-exact reload
def _tiny():
    ml.manual_seed(3)
    return GPT(GPTConfig(vocab_size=29, context_length=12, n_layers=2, n_heads=2, d_model=32))


def _logits(model, ids):
    out = model(ml.tensor(ids))
    return (out[0] if isinstance(out, tuple) else out).numpy()


@pytest.mark.parametrize("how", ["int8", "int4-g16", "int8-asym", "w8a8", "w8a8-static",
                                 "llm-int8", "llm-int8-float", "low-rank", "pruned"])
def test_saved_compressed_model_reloads_bit_for_bit(tmp_path, how):
    ids = np.random.default_rng(0).integers(0, 29, (3, 12))
    model = _tiny()
    model.eval()
    if how == "int8":
        quantize_model(model, 8)
    elif how == "int4-g16":
        quantize_model(model, 4, 16)
    elif how == "int8-asym":
        quantize_model(model, 8, symmetric=False)
    elif how == "w8a8":
        quantize_model(model, factory=W8A8Linear.from_linear)
    elif how == "w8a8-static":
        quantize_model(model, factory=lambda lin: W8A8Linear.from_linear(lin, "tensor"))
        calibrate(model, [ids])
    elif how.startswith("llm-int8"):
        quantize_model(model, factory=lambda lin: LLMInt8Linear.from_linear(
            lin, 0.5, keep_float_weight=how.endswith("float")))
    elif how == "low-rank":
        low_rank_model(model, rank=4)
    else:
        magnitude_prune(model, 0.5, "global")
    want = _logits(model, ids)
    path = tmp_path / "m.safetensors"
    save_compressed(path, model, {"model_config": model.config.to_dict()})
    loaded, extra = load_compressed(path)
    assert np.array_equal(_logits(loaded, ids), want)
    assert extra["layers"] or how == "pruned"
