"""minilm.search (spaces, strategies, the GP, the trial log) on a cheap quadratic, and
minilm.tune (the search config, a 2-trial GPT search that resumes, the command)."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pytest

from minilm.search import (
    BayesianOptimization,
    Choice,
    Float,
    GaussianProcess,
    GridSearch,
    Hyperband,
    Int,
    RandomSearch,
    Space,
    SuccessiveHalving,
    TrialLog,
    expected_improvement,
    hyperband_brackets,
    kernel,
    log_marginal_likelihood,
    normal_cdf,
    normal_pdf,
    successive_halving_schedule,
    trial_record,
)

SPACE = Space({"x": Float(-2.0, 2.0), "y": Float(-2.0, 2.0)})


def quadratic(p: dict) -> float:
    """Minimum 0 at (0.5, -0.3)."""
    return (p["x"] - 0.5) ** 2 + 2.0 * (p["y"] + 0.3) ** 2


def drive(strategy, f=quadratic) -> list[dict]:
    records = []
    while not strategy.finished:
        spec = strategy.ask()
        assert spec is not None
        rec = trial_record(spec, f(spec["params"]), 0.0)
        strategy.tell(rec)
        records.append(rec)
    return records


# ---------------------------------------------------------------------------- spaces
def test_space_encode_decode_round_trip_and_ranges():
    sp = Space({"lr": Float(1e-4, 1e-2, log=True), "n": Int(1, 5), "act": Choice(["a", "b", "c"])})
    u = sp.encode({"lr": 1e-3, "n": 3, "act": "c"})
    assert u == pytest.approx([0.5, 0.5, 5 / 6])
    assert sp.decode(u) == {"lr": pytest.approx(1e-3), "n": 3, "act": "c"}
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sp.sample(rng)
        assert 1e-4 <= p["lr"] <= 1e-2 and p["n"] in range(1, 6) and p["act"] in "abc"
        assert isinstance(p["n"], int)
    with pytest.raises(ValueError, match="low > 0"):
        Float(0, 1, log=True)
    with pytest.raises(ValueError, match="low < high"):
        Float(2, 1)
    with pytest.raises(ValueError, match="not one of"):
        Choice([1, 2]).encode(3)


# ---------------------------------------------------------------------------- grid / random
def test_grid_enumerates_the_product():
    sp = Space({"a": Float(0, 1), "b": Choice(["p", "q"]), "c": Int(1, 3)})
    g = GridSearch(sp, points=3, budget=7)
    recs = drive(g, lambda p: p["a"])
    want = list(itertools.product([0.0, 0.5, 1.0], ["p", "q"], [1, 2, 3]))
    assert [(r["params"]["a"], r["params"]["b"], r["params"]["c"]) for r in recs] == want
    assert all(r["budget"] == 7 for r in recs) and [r["trial"] for r in recs] == list(range(18))
    assert g.ask() is None and g.finished


def test_random_is_reproducible_by_seed():
    a = [r["params"] for r in drive(RandomSearch(SPACE, 6, seed=3))]
    b = [r["params"] for r in drive(RandomSearch(SPACE, 6, seed=3))]
    c = [r["params"] for r in drive(RandomSearch(SPACE, 6, seed=4))]
    assert a == b and a != c and len(a) == 6


# ---------------------------------------------------------------------------- halving, hyperband
def test_successive_halving_keeps_top_third_and_multiplies_budgets():
    assert successive_halving_schedule(27, 1, 27, 3) == [(27, 1), (9, 3), (3, 9), (1, 27)]
    assert successive_halving_schedule(9, 2, 18, 3) == [(9, 2), (3, 6), (1, 18)]
    sh = SuccessiveHalving(SPACE, 1, 9, eta=3, n=9, seed=0)
    recs = drive(sh)
    assert [r["budget"] for r in recs] == [1] * 9 + [3] * 3 + [9]
    rung0, rung1 = recs[:9], recs[9:12]
    top3 = sorted(rung0, key=lambda r: r["loss"])[:3]
    assert [r["params"] for r in rung1] == [r["params"] for r in top3]
    assert recs[12]["params"] == min(rung1, key=lambda r: r["loss"])["params"]
    # a rung waits for all its results before the next one starts
    sh = SuccessiveHalving(SPACE, 1, 9, eta=3, n=9, seed=0)
    specs = [sh.ask() for _ in range(9)]
    assert sh.ask() is None
    for s in specs[:8]:
        sh.tell(trial_record(s, quadratic(s["params"]), 0.0))
    assert sh.ask() is None
    sh.tell(trial_record(specs[8], None, 0.0, error="boom"))  # a failed trial ranks last
    nxt = [sh.ask() for _ in range(3)]
    assert all(s["budget"] == 3 for s in nxt) and specs[8]["params"] not in [s["params"] for s in nxt]


def test_hyperband_brackets_as_in_li_et_al():
    # the paper's table: R = 81, eta = 3
    assert hyperband_brackets(1, 81, 3) == [(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]
    hb = Hyperband(SPACE, 1, 9, eta=3, seed=0)
    recs = drive(hb)
    per_bracket = {}
    for r in recs:
        per_bracket.setdefault(r["bracket"], []).append(r["budget"])
    assert per_bracket == {0: [1] * 9 + [3] * 3 + [9], 1: [3] * 5 + [9], 2: [9] * 3}
    assert hb.best()["loss"] == min(r["loss"] for r in recs)


# ---------------------------------------------------------------------------- the GP
def test_gp_interpolates_noise_free_data():
    rng = np.random.default_rng(0)
    X = rng.random((7, 2))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    for kind in ("rbf", "matern52"):
        gp = GaussianProcess(kind, length_scale=0.4, noise=1e-10, optimize=False).fit(X, y)
        mu, sd = gp.predict(X)
        assert mu == pytest.approx(y, abs=1e-4)
        assert np.all(sd < 1e-3)
        _, sd_far = gp.predict(np.array([[5.0, 5.0]]))
        assert sd_far[0] > 0.5 * gp.y_std


def test_log_marginal_likelihood_matches_dense_formula():
    rng = np.random.default_rng(1)
    X, y = rng.random((5, 3)), rng.standard_normal(5)
    K = kernel(X, X, [0.3, 0.5, 1.0], 1.7, "matern52") + 0.01 * np.eye(5)
    direct = (-0.5 * y @ np.linalg.inv(K) @ y - 0.5 * np.linalg.slogdet(K)[1]
              - 2.5 * math.log(2 * math.pi))
    assert log_marginal_likelihood(K, y) == pytest.approx(direct, rel=1e-10)
    assert log_marginal_likelihood(-K, y) == -math.inf
    # fitting raises the likelihood over the starting hyperparameters
    gp = GaussianProcess("rbf", seed=0).fit(X, y)
    start = GaussianProcess("rbf", optimize=False).fit(X, y)
    ys = (y - y.mean()) / y.std()
    K0 = kernel(X, X, 0.3, 1.0, "rbf") + (1e-4 + 1e-10) * np.eye(5)
    assert gp.log_likelihood >= log_marginal_likelihood(K0, ys) - 1e-9
    assert start.noise == 1e-4


def test_kernels_at_known_distances():
    a, b = np.zeros((1, 1)), np.ones((1, 1))
    assert kernel(a, b, 1.0, 2.0, "rbf")[0, 0] == pytest.approx(2 * math.exp(-0.5))
    r = 1.0
    m52 = (1 + math.sqrt(5) * r + 5 / 3 * r * r) * math.exp(-math.sqrt(5) * r)
    assert kernel(a, b, 1.0, 1.0, "matern52")[0, 0] == pytest.approx(m52)


def test_expected_improvement():
    # sigma = 0 and mu >= f*: no improvement
    assert expected_improvement([1.0, 2.0], [0.0, 0.0], best=1.0).tolist() == [0.0, 0.0]
    assert expected_improvement([0.5], [0.0], best=1.0)[0] == pytest.approx(0.5)
    mu, s, best, xi = 0.8, 0.3, 1.0, 0.05
    z = (best - mu - xi) / s
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert expected_improvement(mu, s, best, xi) == pytest.approx((best - mu - xi) * cdf + s * phi)
    assert normal_cdf(0.0) == pytest.approx(0.5) and normal_pdf(0.0) == pytest.approx(0.3989423)


def test_bayesian_optimization_beats_random_on_the_quadratic():
    bo, rnd = [], []
    for seed in range(3):
        bo.append(min(r["loss"] for r in drive(BayesianOptimization(SPACE, 14, seed=seed))))
        rnd.append(min(r["loss"] for r in drive(RandomSearch(SPACE, 14, seed=seed))))
    assert np.mean(bo) < np.mean(rnd)
    assert np.mean(bo) < 0.05


# ---------------------------------------------------------------------------- the log
def test_trial_log_resume_skips_finished_and_tolerates_a_cut_line(tmp_path):
    path = tmp_path / "trials.jsonl"
    log = TrialLog(path)
    first = SuccessiveHalving(SPACE, 1, 9, eta=3, n=9, seed=5)
    specs = [first.ask() for _ in range(9)]
    for s in specs[:5]:
        log.append(trial_record(s, quadratic(s["params"]), 0.1))
    with open(path, "a") as f:
        f.write('{"trial": 5, "params": {"x": 0.')  # the crash cut this line short
    assert [r["trial"] for r in log.read()] == [0, 1, 2, 3, 4]
    again = SuccessiveHalving(SPACE, 1, 9, eta=3, n=9, seed=5)
    todo = log.replay(again)
    assert [s["trial"] for s in todo] == []  # stops once every logged trial is told
    rest = [again.ask() for _ in range(4)]
    assert [s["trial"] for s in rest] == [5, 6, 7, 8]
    assert [s["params"] for s in rest] == [s["params"] for s in specs[5:]]
    log.append(trial_record(rest[0], 1.0, 0.1))  # the half line is dropped first
    assert [r["trial"] for r in log.read()] == [0, 1, 2, 3, 4, 5]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    # a trial missing in the middle (running at the crash) comes back to run first
    recs = [r for r in log.read() if r["trial"] != 2]
    todo = TrialLog(path).replay(SuccessiveHalving(SPACE, 1, 9, eta=3, n=9, seed=5), recs)
    assert [s["trial"] for s in todo] == [2]


def test_trial_log_rejects_a_foreign_log(tmp_path):
    log = TrialLog(tmp_path / "t.jsonl")
    for i in range(3):
        log.append({"trial": i, "params": {"x": 0.0, "y": 0.0}, "budget": 1, "loss": 1.0,
                    "status": "ok", "seconds": 0})
    with pytest.raises(ValueError, match="another search"):
        log.replay(RandomSearch(SPACE, 2, seed=0))


# ---------------------------------------------------------------------------- minilm.tune
TINY = """
[search]
strategy = "{strategy}"
trials = 2
seed = 0
[space]
lr = {{type = "float", low = 1e-3, high = 1e-2, log = true}}
d_model = {{type = "choice", values = [16, 32]}}
[model]
n_layers = 1
n_heads = 2
context_length = 16
[train]
tokenizer = "char"
batch_size = 4
max_steps = 3
eval_batches = 2
warmup_steps = 1
batch_threads = 1
"""


def _write(tmp_path, text: str):
    p = tmp_path / "search.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, match", [
    (TINY.format(strategy="anneal"), "strategy = 'anneal': must be one of"),
    (TINY.format(strategy="random").replace('type = "float"', 'type = "real"'),
     r"\[space\] lr: type = 'real': must be float, int or choice"),
    (TINY.format(strategy="random").replace("low = 1e-3", "low = 0.0"), r"\[space\] lr: .*low > 0"),
    (TINY.format(strategy="random") + "\n[extra]\n", "unknown tables"),
    (TINY.format(strategy="random").replace("d_model = {", "colour = {"),
     r"\[space\] colour: not a \[model\] or \[train\] setting"),
    (TINY.format(strategy="random").replace("d_model = {", "tokenizer = {"), "cannot be searched"),
    (TINY.format(strategy="random").replace("trials = 2", "trials = 0"), "trials = 0"),
    (TINY.format(strategy="random").replace("n_layers = 1", "n_layers = 0"), "n_layers"),
    (TINY.format(strategy="bayes").replace("seed = 0", 'seed = 0\nn_initial = "x"'),
     r"\[search\] n_initial = 'x': must be an integer >= 1"),
    (TINY.format(strategy="bayes").replace("seed = 0", 'seed = 0\nxi = "a"'),
     r"\[search\] xi = 'a': must be a finite number >= 0"),
    (TINY.format(strategy="grid").replace("seed = 0", "seed = 0\ngrid_points = 0"),
     r"\[search\] grid_points = 0: must be an integer >= 2"),
    (TINY.format(strategy="random").replace("log = true", 'log = "yes"'),
     r"\[space\] lr: log = 'yes': must be true or false"),
])
def test_bad_configs_are_one_line_value_errors(tmp_path, text, match):
    from minilm.tune import load_search_config

    with pytest.raises(ValueError, match=match) as exc:
        load_search_config(_write(tmp_path, text))
    assert "\n" not in str(exc.value)


def test_missing_config_file(tmp_path):
    from minilm.tune import load_search_config

    with pytest.raises(ValueError, match="does not exist"):
        load_search_config(tmp_path / "nope.toml")


def test_run_search_on_a_tiny_gpt_writes_the_log_and_resumes(tmp_path):
    from minilm.tune import add_search_parser, load_search_config, run_search

    cfg_path = _write(tmp_path, TINY.format(strategy="random"))
    out = tmp_path / "out"
    parser = argparse.ArgumentParser(prog="minilm")
    add_search_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["search", "--config", str(cfg_path), "--out-dir", str(out)])
    assert args.func(args) == 0
    recs = TrialLog(out / "trials.jsonl").read()
    assert [r["trial"] for r in recs] == [0, 1]
    assert all(r["status"] == "ok" and r["budget"] == 3 and math.isfinite(r["loss"]) for r in recs)
    assert (out / "search.png").exists()
    # a second run needs --resume; a resume of a finished search runs nothing
    config = load_search_config(cfg_path)
    with pytest.raises(ValueError, match="already holds a search"):
        run_search(config, out)
    lines = (out / "trials.jsonl").read_text().splitlines()
    (out / "trials.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # crash mid-line
    said = []
    result = run_search(config, out, resume=True, log=said.append)
    assert any("resuming: 1 trials" in s for s in said)
    assert [r["trial"] for r in result["records"]] == [0, 1]
    assert result["records"][0] == recs[0]
    assert len((out / "trials.jsonl").read_text().splitlines()) == 2
    # resuming with another config is refused
    config["search"]["seed"] = 1
    with pytest.raises(ValueError, match=r"\[search\] differ"):
        run_search(config, out, resume=True)


def test_hyperband_brackets_reach_max_budget_with_integer_budgets():
    """(6, 60, 3): bracket 0 starts at 6.67 steps; rounding that first would compute the
    rungs from 7 and stop at 21. Every bracket's last rung must train at exactly 60."""
    from minilm.search.space import Float, Space
    from minilm.search.strategies import Hyperband

    hb = Hyperband(Space({"x": Float(0.0, 1.0)}), 6, 60, eta=3, seed=0)
    last = {}
    while not hb.finished:
        spec = hb.ask()
        assert spec is not None
        assert isinstance(spec["budget"], int)
        last[spec["bracket"]] = max(last.get(spec["bracket"], 0), spec["budget"])
        hb.tell({**spec, "loss": float(spec["params"]["x"]), "status": "ok"})
    assert last == {0: 60, 1: 60, 2: 60}
