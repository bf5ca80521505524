"""minilm.viz: the autograd graph as DOT, attention maps, LR schedule and pipeline figures."""

from __future__ import annotations

import argparse
import re
import shutil

import numpy as np
import pytest

from minilm.tensor import Tensor
from minilm.viz import (
    GraphvizNotFoundError,
    add_viz_parser,
    attend,
    attention_maps,
    attention_probs,
    graph_structure,
    pipeline_timeline,
    plot_attention,
    plot_lr_schedules,
    plot_pipeline_schedule,
    save_graph,
    tiny_gpt,
    tiny_gpt_loss,
    to_dot,
)
from minilm.viz import graph as viz_graph

EDGE = re.compile(r"^\s*(\w+) -> (\w+);$", re.M)
NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)", shape=(\w+)', re.M)


def _expr():
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    return a, b, ((a * b) + a).sum()


def _parse(dot: str) -> tuple[dict, set]:
    nodes = {nid: (label, shape) for nid, label, shape in NODE.findall(dot)}
    return nodes, set(EDGE.findall(dot))


def test_dot_of_a_known_expression():
    a, b, y = _expr()
    dot = to_dot(y, params={"a": a, "b": b})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = _parse(dot)
    ops = {nid: lab for nid, (lab, shape) in nodes.items() if shape == "box"}
    assert sorted(ops.values()) == ["Add", "Mul", "Sum"]
    by_label = {lab: nid for nid, (lab, _) in nodes.items()}
    ta, tb = by_label[r"a\n(2, 3) float32"], by_label[r"b\n(2, 3) float32"]
    tout = by_label[r"output\n() float32"]
    assert sum(1 for lab, _ in nodes.values() if lab.startswith("a\\n")) == 1  # a once
    op = {v: k for k, v in ops.items()}
    mul_out = next(t for s, t in edges if s == op["Mul"])
    add_out = next(t for s, t in edges if s == op["Add"])
    expected = {(ta, op["Mul"]), (tb, op["Mul"]), (op["Mul"], mul_out), (mul_out, op["Add"]),
                (ta, op["Add"]), (op["Add"], add_out), (add_out, op["Sum"]), (op["Sum"], tout)}
    assert edges == expected
    assert nodes[mul_out][0] == "(2, 3) float32" and nodes[add_out][0] == "(2, 3) float32"
    assert len(nodes) == 8  # 3 ops + a, b, a*b, a*b+a, output
    assert to_dot(y, params={"a": a, "b": b}) == dot  # deterministic


def test_leaf_labels_without_params_and_with_a_module():
    _, _, y = _expr()
    nodes, _ = graph_structure(y)
    assert [n["name"] for n in nodes if n["role"] == "leaf"] == ["leaf", "leaf"]
    model, loss = tiny_gpt_loss(tiny_gpt(n_layers=1))
    nodes, edges = graph_structure(loss, params=model)
    names = {n["name"] for n in nodes if n["role"] == "param"}
    assert {"tok_emb.weight", "blocks.0.attn.qkv.weight", "ln_f.bias"} <= names
    assert len(names) == len([n for n in nodes if n["role"] == "param"])  # each param once
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))
    assert all(a in ids and b in ids for a, b in edges)
    assert "float32" in to_dot(loss, model)


def test_to_dot_leaves_the_graph_usable():
    a, b, y = _expr()
    before = to_dot(y)
    y.backward()
    np.testing.assert_allclose(a.grad.data, b.data + 1.0, rtol=1e-6)
    np.testing.assert_allclose(b.grad.data, a.data, rtol=1e-6)
    assert to_dot(y) == before  # the graph's structure survives backward too


def test_to_dot_of_a_leaf_and_bad_input():
    a = Tensor(np.zeros((4,), np.float32), requires_grad=True)
    nodes, edges = graph_structure(a, {"w": a})
    assert len(nodes) == 1 and nodes[0]["name"] == "w" and not edges
    with pytest.raises(ValueError):
        to_dot(np.zeros(3))


def test_save_graph_dot_and_svg_without_dot(tmp_path, monkeypatch):
    _, _, y = _expr()
    (p,) = save_graph(y, tmp_path / "g.dot")
    assert p.read_text() == to_dot(y)
    monkeypatch.setattr(viz_graph.shutil, "which", lambda name: None)
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz"):
        save_graph(y, tmp_path / "h.svg")
    assert (tmp_path / "h.dot").exists() and not (tmp_path / "h.svg").exists()
    with pytest.raises(ValueError, match="must end with"):
        save_graph(y, tmp_path / "g.txt")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
def test_save_graph_svg_with_dot(tmp_path):
    _, _, y = _expr()
    save_graph(y, tmp_path / "g.svg")
    assert "<svg" in (tmp_path / "g.svg").read_text()


@pytest.mark.parametrize("config", [{}, {"positional": "rope"}, {"window": 3}])
def test_attention_maps_are_probabilities_that_reproduce_the_module(config):
    model = tiny_gpt(n_layers=2, n_heads=2, d_model=16, init_std=0.3, **config)
    ids = [3, 14, 15, 9, 2, 6, 5]
    (maps,) = attention_maps(model, ids)  # check=True: rebuilt output == module output
    assert maps.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-9)
    assert np.all(maps >= 0)
    assert np.all(maps[..., np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0.0)
    if config.get("window"):
        assert maps[0, 0, 6, 0] == 0.0 and maps[0, 0, 6, 4] > 0
    assert not np.allclose(maps[0, 0, -1], 1 / 7)  # not uniform with init_std=0.3

    # reproduce by hand: hook the first attention module and rebuild its output
    seen = {}
    attn = model.blocks[0].attn
    h = attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    model.eval()
    model(Tensor(np.array([ids])))
    h.remove()
    probs = attention_probs(attn, seen["x"])
    np.testing.assert_allclose(probs[0], maps[0], atol=1e-12)
    np.testing.assert_allclose(attend(attn, seen["x"], probs), seen["out"].data, atol=1e-5)
    assert not attn._forward_hooks  # attention_maps removed its hooks


def test_attention_maps_batch_and_errors():
    model = tiny_gpt(n_layers=1)
    maps = attention_maps(model, np.array([[1, 2, 3], [4, 5, 6]]))
    assert len(maps) == 2 and maps[1].shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="context length"):
        attention_maps(model, list(range(40)))


@pytest.fixture
def plt():
    return pytest.importorskip("matplotlib")


def test_plot_attention_writes_a_png(tmp_path, plt):
    model = tiny_gpt(init_std=0.3)
    maps = attention_maps(model, [ord(c) % 96 for c in "hello"])
    p = plot_attention(maps, list("hello"), tmp_path / "att.png")
    assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    p = plot_attention(maps[0], list("hello"), tmp_path / "att1.png", layer=1)
    assert p.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_attention(maps[0], list("hell"), tmp_path / "bad.png")


def test_plot_lr_schedules_writes_a_png(tmp_path, plt):
    p = plot_lr_schedules(tmp_path / "lr.png", total_steps=200, warmup=20)
    assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"


def test_lr_curves_are_the_schedulers_own():
    from minilm.viz import lr_schedule_curves

    curves = lr_schedule_curves(100, 10)
    cos = curves["CosineWithWarmup (w=10)"]
    assert cos[0] == 0.0 and cos[10] == pytest.approx(1.0) and cos[5] == pytest.approx(0.5)
    step = next(v for k, v in curves.items() if k.startswith("StepLR"))
    assert step[0] == 1.0 and step[-1] == pytest.approx(0.125)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_plot_pipeline_schedule_writes_a_png(tmp_path, plt, schedule):
    p = plot_pipeline_schedule(tmp_path / f"{schedule}.png", 4, 6, schedule)
    assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"


def test_pipeline_timeline_matches_the_planner():
    sim = pipeline_timeline(4, 8, "1f1b")
    assert sim["bubble"] == pytest.approx(sim["bubble_formula"]) == pytest.approx(3 / 11)
    assert all(len(ev) == 16 for ev in sim["timeline"])
    assert sim["peak_in_flight"] == 4 and pipeline_timeline(4, 8, "gpipe")["peak_in_flight"] == 8
    with pytest.raises(ValueError, match="unknown schedule"):
        pipeline_timeline(2, 2, "zigzag")
    with pytest.raises(ValueError, match="stages"):
        pipeline_timeline(0, 2)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="minilm")
    add_viz_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["viz", *argv])
    return args.func(args)


def test_viz_command(tmp_path, plt):
    rc = _cli(["--graph", str(tmp_path / "g.dot"), "--pipeline", str(tmp_path / "p.png"),
               "--stages", "3", "--micro-batches", "4", "--schedule", "gpipe",
               "--attention", str(tmp_path / "a.png"), "--prompt", "abc"])
    assert rc == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "a.png").stat().st_size > 0


@pytest.mark.parametrize("argv, match", [
    ([], "nothing to draw"),
    (["--graph", "g.txt"], ".dot"),
    (["--pipeline", "p.png", "--schedule", "zigzag"], "unknown schedule"),
    (["--pipeline", "p.png", "--stages", "0"], "stages"),
    (["--lr-schedules", "lr.jpg"], ".png"),
    (["--attention", "a.png", "--run", "/nonexistent/run"], "no such run"),
    (["--lr-schedules", "lr.png", "--attention", "a.png", "--layer", "99"], "--layer 99"),
    (["--lr-schedules", "lr.png", "--attention", "a.png", "--prompt", ""], "prompt is empty"),
])
def test_viz_command_bad_input(argv, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=match):
        _cli(argv)
    assert not list(tmp_path.iterdir())  # nothing written


def test_attention_maps_match_the_fused_flash_path():
    """From flash_min_len on, the module runs the fused kernels, which never form P: the
    recomputed maps must still reproduce its output (attention_maps checks)."""
    import minilm

    try:
        n = minilm.use_backend("numba").flash_min_len  # conftest goes back to numpy after
    except ImportError:
        n = None
    if n is None:
        pytest.skip("no fused attention kernels on this backend")
    model = tiny_gpt(n_layers=1, context_length=n + 8, init_std=0.3)
    (maps,) = attention_maps(model, np.random.default_rng(0).integers(0, 96, n + 4))
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-9)


def test_attention_maps_of_shared_layers_and_top_k():
    """A block shared across depth is captured once per application; top-k attention
    keeps at most k keys per query (and the maps reproduce the module output)."""
    import minilm as ml
    from minilm.nn import GPT, GPTConfig
    from minilm.viz.attention import attention_maps

    ml.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, context_length=12, n_layers=3, n_heads=2, d_model=16,
                      share_layers=True, attn_top_k=2, init_std=0.3))
    maps = attention_maps(m, np.arange(9) % 20)[0]
    assert maps.shape == (3, 2, 9, 9)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-9)
    assert ((maps > 0).sum(-1) <= 2).all()
    assert not np.allclose(maps[0], maps[2])  # three applications, three inputs
