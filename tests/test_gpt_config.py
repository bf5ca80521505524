"""``GPTConfig`` checks its own fields: a config built in Python with a wrong type or an
out-of-range value is refused at construction with an error naming ``GPTConfig.<field>``,
the value and what is allowed (TypeError for a wrong type, ValueError for a bad value);
everything it accepts builds a GPT that runs."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

import minilm as ml
from minilm.nn import GPT, GPTConfig

TINY = dict(vocab_size=11, context_length=8, n_layers=1, n_heads=2, d_model=8)
NAN, INF = float("nan"), float("inf")


def _forward_runs(cfg: GPTConfig) -> None:
    model = GPT(cfg)
    T = min(cfg.context_length, 4)
    ids = ml.randint(0, cfg.vocab_size, (2, T))
    logits, loss = model(ids, ids)
    assert logits.shape == (2, T, cfg.vocab_size)
    assert np.isfinite(float(loss.item()))


def test_defaults_and_a_tiny_config_build_and_run():
    assert GPTConfig().d_ff == 4 * GPTConfig().d_model
    _forward_runs(GPTConfig(**TINY))


@pytest.mark.parametrize("field, value", [
    ("vocab_size", "11"), ("vocab_size", 11.0), ("vocab_size", True), ("vocab_size", None),
    ("context_length", [8]), ("n_layers", "2"), ("n_layers", False), ("n_heads", 2.0),
    ("d_model", "8"), ("d_ff", 32.5), ("d_ff", "32"), ("dropout", "0.1"), ("dropout", None),
    ("dropout", True), ("bias", 1), ("bias", "yes"), ("bias", None), ("positional", 3),
    ("positional", None), ("tie_weights", 0), ("norm", None), ("activation", 1),
    ("window", 2.0), ("window", "4"), ("window", True), ("init_std", "0.02"),
    ("init_std", None), ("checkpoint_activations", "false"),
])
def test_wrong_type_refused(field, value):
    with pytest.raises(TypeError, match=rf"^GPTConfig\.{field} = .*: must be "):
        GPTConfig(**{**TINY, field: value})


@pytest.mark.parametrize("field, value, allowed", [
    ("vocab_size", 0, "an integer >= 1"), ("vocab_size", -3, "an integer >= 1"),
    ("context_length", 0, "an integer >= 1"), ("n_layers", 0, "an integer >= 1"),
    ("n_heads", 0, "an integer >= 1"), ("n_heads", -2, "an integer >= 1"),
    ("d_model", 0, "an integer >= 1"), ("d_ff", 0, "an integer >= 1"),
    ("d_ff", -4, "an integer >= 1"), ("dropout", 1.0, "[0, 1)"), ("dropout", 1.5, "[0, 1)"),
    ("dropout", -0.1, "[0, 1)"), ("dropout", NAN, "[0, 1)"), ("dropout", INF, "[0, 1)"),
    ("positional", "alibi", "learned, sinusoidal or rope"),
    ("positional", "", "learned, sinusoidal or rope"),
    ("norm", "batchnorm", "layernorm or rmsnorm"), ("norm", "LayerNorm", "layernorm or rmsnorm"),
    ("activation", "relu", "gelu or gelu_tanh"), ("activation", "", "gelu or gelu_tanh"),
    ("window", 0, "an integer >= 1"), ("window", -1, "an integer >= 1"),
    ("init_std", 0.0, "a finite number > 0"), ("init_std", -1, "a finite number > 0"),
    ("init_std", NAN, "a finite number > 0"), ("init_std", INF, "a finite number > 0"),
    ("init_std", 10**400, "a finite number > 0"),
])
def test_bad_value_refused(field, value, allowed):
    with pytest.raises(ValueError, match=rf"^GPTConfig\.{field} = ") as info:
        GPTConfig(**{**TINY, field: value})
    msg = str(info.value)
    assert repr(value) in msg and allowed in msg


def test_fields_that_tie_are_refused_with_both_named():
    with pytest.raises(ValueError, match=r"GPTConfig\.d_model = 10: .*n_heads 4"):
        GPTConfig(**{**TINY, "d_model": 10, "n_heads": 4})
    # RoPE rotates pairs: an odd head size used to fail later, inside GPT(...)
    with pytest.raises(ValueError, match=r"GPTConfig\.positional = 'rope': .*even head size"):
        GPTConfig(**{**TINY, "d_model": 6, "n_heads": 2, "positional": "rope"})


def test_numpy_scalars_accepted_as_plain_python_values():
    cfg = GPTConfig(**{**TINY, "vocab_size": np.int64(11), "dropout": np.float64(0.25),
                       "bias": np.bool_(False), "window": np.int32(3)})
    assert type(cfg.vocab_size) is int and type(cfg.window) is int
    assert type(cfg.dropout) is float and type(cfg.bias) is bool
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg  # plain values round-trip


def test_every_field_is_checked():
    # a field added to GPTConfig without a rule would be accepted unchecked
    from minilm.nn.transformer import _GPT_RULES

    assert {f.name for f in fields(GPTConfig)} == set(_GPT_RULES)


# ------------------------------------------------------------------ property: never worse

_BAD_INTS = st.sampled_from([0, -1, -7, 10**12, 2**63])
_BAD_FLOATS = st.sampled_from([NAN, INF, -INF, -0.5, 1.0, 1e300, -1e-9])
_JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.lists(st.integers(0, 3),
                  max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                  st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20))
_SMALL = {
    "vocab_size": st.integers(1, 20), "context_length": st.integers(1, 8),
    "n_layers": st.integers(1, 2), "n_heads": st.sampled_from([1, 2, 4]),
    "d_model": st.sampled_from([4, 8, 12, 16]), "d_ff": st.one_of(st.none(), st.integers(1, 16)),
    "dropout": st.floats(0.0, 0.9), "bias": st.booleans(),
    "positional": st.sampled_from(["learned", "sinusoidal", "rope", "alibi", "Rope"]),
    "tie_weights": st.booleans(),
    "norm": st.sampled_from(["layernorm", "rmsnorm", "ln", ""]),
    "activation": st.sampled_from(["gelu", "gelu_tanh", "relu", "GELU"]),
    "window": st.one_of(st.none(), st.integers(1, 8)),
    "init_std": st.floats(1e-4, 0.5), "checkpoint_activations": st.booleans(),
}
_NUMERIC = {"dropout", "init_std"}


@st.composite
def _field_dicts(draw) -> dict:
    """Some fields given small values (mostly allowed ones), then 0 .. 5 of them
    replaced by out-of-range values or values of any other type."""
    d = draw(st.fixed_dictionaries({}, optional=_SMALL))
    names = draw(st.lists(st.sampled_from(sorted(_SMALL)), unique=True,
                          max_size=draw(st.sampled_from([0, 0, 1, 1, 2, 5]))))
    for name in names:
        d[name] = draw(st.one_of(_BAD_FLOATS if name in _NUMERIC else _BAD_INTS, _JUNK))
    return d


def _small_enough(cfg: GPTConfig) -> bool:
    return (cfg.vocab_size <= 64 and cfg.context_length <= 16 and cfg.d_model <= 16
            and cfg.d_ff <= 64 and cfg.n_layers <= 2)


@examples(1.0)
@given(_field_dicts())
def test_any_field_values_build_a_working_gpt_or_are_refused_by_name(drawn):
    kwargs = {**TINY, **drawn}
    try:
        cfg = GPTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        assert any(msg.startswith(f"GPTConfig.{f.name} = ") for f in fields(GPTConfig)), msg
        assert " must " in msg, msg
        assert any(k in msg for k in kwargs), msg  # and a field that was given
        return
    for k, v in kwargs.items():  # what was accepted is kept, as a plain value
        got = getattr(cfg, k)
        if k in _NUMERIC:
            assert type(got) is float and got == float(v), (k, v, got)
        elif not (k == "d_ff" and v is None):
            assert type(got) is type(v) and got == v, (k, v, got)
    assert 0.0 <= cfg.dropout < 1.0 and 0.0 < cfg.init_std < math.inf
    if _small_enough(cfg):
        _forward_runs(cfg)
