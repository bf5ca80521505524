"""Run configuration: what to train (``GPTConfig``), how (``TrainConfig``), read from a
TOML file with ``[model]`` and ``[train]`` tables and overridden by command-line flags.

    [model]
    n_layers = 4
    d_model = 256

    [train]
    max_steps = 2000
    lr = 1e-3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..nn.transformer import GPTConfig

__all__ = ["TrainConfig", "check_setting", "load_toml", "merge_config"]

_INF = float("inf")


def _pos(x: Any) -> bool:
    return x >= 1


def _nonneg(x: Any) -> bool:
    return x >= 0


def _backends() -> tuple:
    from ..backends import available_backends

    return tuple(available_backends())


def _why_unavailable(name: Any) -> str:
    """Why the registered backend ``name`` cannot be used here (its ImportError: "CuPy
    is not installed; pip install ..."), or "" for a name that is not a backend."""
    from ..backends import _FACTORIES, get_backend

    if name not in _FACTORIES:
        return ""
    try:
        get_backend(name)
    except ImportError as exc:
        return f"not available on this machine ({exc})"
    return ""


# name -> (type, check, what is allowed); one table for flags and TOML keys alike
RULES: dict[str, tuple] = {
    # [model]
    "vocab_size": (int, _pos, "an integer >= 1"),
    "context_length": (int, _pos, "an integer >= 1"),
    "n_layers": (int, _pos, "an integer >= 1"),
    "n_heads": (int, _pos, "an integer >= 1"),
    "d_model": (int, _pos, "an integer >= 1"),
    "d_ff": (int, _pos, "an integer >= 1"),
    "dropout": (float, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)"),
    "bias": (bool, None, "true or false"),
    "positional": (str, lambda x: x in ("learned", "sinusoidal", "rope"),
                   "learned, sinusoidal or rope"),
    "tie_weights": (bool, None, "true or false"),
    "norm": (str, lambda x: x in ("layernorm", "rmsnorm"), "layernorm or rmsnorm"),
    "activation": (str, lambda x: x in ("gelu", "gelu_tanh"), "gelu or gelu_tanh"),
    "window": (int, _pos, "an integer >= 1 (omit it for full causal attention)"),
    "init_std": (float, lambda x: 0.0 < x < _INF, "a finite number > 0"),
    "checkpoint_activations": (bool, None, "true or false"),
    "attn_top_k": (int, _pos, "an integer >= 1 (omit it for ordinary attention)"),
    "share_layers": (bool, None, "true or false"),
    # [train]
    "out_dir": (str, lambda x: x != "", "a non-empty path"),
    "data": (str, lambda x: x != "", "a non-empty path"),
    "tokenizer": (str, lambda x: x in ("char", "bpe"), "char or bpe"),
    "bpe_vocab_size": (int, lambda x: x >= 256, "an integer >= 256"),
    "val_fraction": (float, lambda x: 0.0 < x < 1.0, "a number in (0, 1)"),
    "batch_size": (int, _pos, "an integer >= 1"),
    "grad_accum_steps": (int, _pos, "an integer >= 1"),
    "max_steps": (int, _pos, "an integer >= 1"),
    "lr": (float, lambda x: 0.0 <= x < _INF, "a finite number >= 0"),
    "min_lr": (float, lambda x: 0.0 <= x < _INF, "a finite number >= 0"),
    "warmup_steps": (int, _nonneg, "an integer >= 0"),
    "weight_decay": (float, lambda x: 0.0 <= x < _INF, "a finite number >= 0"),
    "beta1": (float, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)"),
    "beta2": (float, lambda x: 0.0 <= x < 1.0, "a number in [0, 1)"),
    "grad_clip": (float, lambda x: 0.0 <= x < _INF, "a finite number >= 0 (0: off)"),
    "eval_interval": (int, _pos, "an integer >= 1"),
    "eval_batches": (int, _pos, "an integer >= 1"),
    "ckpt_interval": (int, _pos, "an integer >= 1"),
    "early_stopping_patience": (int, _pos, "an integer >= 1"),
    "log_interval": (int, _pos, "an integer >= 1"),
    "seed": (int, _nonneg, "an integer >= 0"),
    "backend": (str, lambda x: x in _backends(), "one of the available backends"),
    "dtype": (str, lambda x: x in ("float32", "float64"), "float32 or float64"),
    "prefetch": (int, _nonneg, "an integer >= 0"),
    "batch_threads": (int, _nonneg, "an integer >= 0 (0: one per core, 1: off)"),
    "progress": (bool, None, "true or false"),
    "plot": (bool, None, "true or false"),
    "skip_nonfinite": (bool, None, "true or false"),
    "amp": (str, lambda x: x in ("off", "fp16", "bf16"), "off, fp16 or bf16"),
    "dp": (int, _pos, "an integer >= 1"),
    "tp": (int, _pos, "an integer >= 1"),
    "pp": (int, _pos, "an integer >= 1"),
    "zero": (int, lambda x: x in (0, 1), "0 or 1"),
    "micro_batches": (int, _pos, "an integer >= 1"),
    "schedule": (str, lambda x: x in ("gpipe", "1f1b"), "gpipe or 1f1b"),
    "bucket_mb": (float, lambda x: 0.0 < x < _INF, "a finite number > 0"),
    "teacher": (str, lambda x: x != "", "the directory of a trained run"),
    "distill_temperature": (float, lambda x: 0.0 < x < _INF, "a finite number > 0"),
    "distill_alpha": (float, lambda x: 0.0 <= x <= 1.0, "a number in [0, 1]"),
}


def check_setting(label: str, value: Any, typ: type, check: Any, allowed: str) -> Any:
    """``value`` of the flag or key ``label`` as ``typ`` when it passes ``check``, else
    ValueError naming the label, the value and what is allowed."""
    def bad() -> ValueError:
        if typ is str and check is not None and label.endswith("backend"):
            why = _why_unavailable(value)
            if why:
                return ValueError(f"{label} = {value!r}: {why}")
            what = ", ".join(_backends())
        else:
            what = allowed
        return ValueError(f"{label} = {value!r}: must be {what}")

    if typ is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        value = float(value)
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif not isinstance(value, typ):
        raise bad()
    if check is not None and not check(value):  # NaN fails every comparison
        raise bad()
    return value


@dataclass
class TrainConfig:
    """Everything about a training run except the model's shape."""

    out_dir: str = "runs/gpt"
    data: str | None = None  # None: the built-in corpus (Python's pydoc topics)
    tokenizer: str = "bpe"  # "char" or "bpe"
    bpe_vocab_size: int = 512
    val_fraction: float = 0.05
    batch_size: int = 16
    grad_accum_steps: int = 1
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 200
    eval_batches: int = 8
    ckpt_interval: int = 200
    early_stopping_patience: int | None = None
    log_interval: int = 10
    seed: int = 1337
    backend: str | None = None  # None: keep the current backend
    dtype: str = "float32"
    prefetch: int = 2
    batch_threads: int = 0  # threads splitting each batch's rows (0: one per core; 1: off)
    progress: bool = True
    plot: bool = True
    skip_nonfinite: bool = False  # skip (and count) steps with a NaN/inf loss or gradient
    amp: str = "off"  # mixed precision: off | fp16 (with dynamic loss scaling) | bf16
    # parallelism (under mpiexec): dp defaults to world size / (tp * pp)
    dp: int | None = None
    tp: int = 1
    pp: int = 1
    zero: int = 0
    micro_batches: int = 1
    schedule: str = "1f1b"
    bucket_mb: float = 25.0
    # knowledge distillation (minilm distill): the teacher run, T and alpha of
    # alpha T^2 KL(p_t^T || p_s^T) + (1 - alpha) CE
    teacher: str | None = None
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):  # a TrainConfig built in Python gets the same checks
            value = getattr(self, f.name)
            if f.name in RULES and value is not None:
                setattr(self, f.name, check_setting(f"TrainConfig.{f.name}", value,
                                                    *RULES[f.name]))
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"TrainConfig: tokenizer must be 'char' or 'bpe', got "
                             f"{self.tokenizer!r}")
        for name in ("batch_size", "grad_accum_steps", "max_steps", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig: val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def read_toml(path: str | Path) -> dict:
    """The TOML document in ``path``; a missing file or bad TOML is a ValueError naming
    the file (``minilm train --config`` and ``minilm search --config`` share this)."""
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as exc:
            raise ImportError("reading --config needs Python >= 3.11 or `pip install tomli`") \
                from exc
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc


def load_toml(path: str | Path) -> dict:
    """Parse a TOML config file into {"model": {...}, "train": {...}}."""
    p = Path(path)
    doc = read_toml(p)
    unknown = set(doc) - {"model", "train"}
    if unknown:
        raise ValueError(f"config file {str(p)!r}: unknown tables {sorted(unknown)}; "
                         "use [model] and [train]")
    return doc


def _check_keys(kind: str, cls: Any, d: dict) -> None:
    names = {f.name for f in fields(cls)}
    bad = sorted(set(d) - names)
    if bad:
        raise ValueError(f"unknown {kind} setting(s) {bad}; known: {sorted(names)}")


def merge_config(toml: dict | None = None, model_overrides: dict | None = None,
                 train_overrides: dict | None = None,
                 defaults: tuple[dict, dict] | None = None) -> tuple[GPTConfig, TrainConfig]:
    """defaults <- TOML tables <- overrides (flags given on the command line)."""
    model_d, train_d = ({}, {}) if defaults is None else (dict(defaults[0]), dict(defaults[1]))
    label: dict = {}
    for kind, cls, base, src in (("model", GPTConfig, model_d, (toml or {}).get("model", {})),
                                 ("train", TrainConfig, train_d, (toml or {}).get("train", {}))):
        if not isinstance(src, dict):
            raise ValueError(f"config [{kind}] must be a table, got {src!r}")
        _check_keys(kind, cls, src)
        base.update(src)
        label.update({k: f"[{kind}] {k}" for k in src})
    for kind, cls, base, src in (("model", GPTConfig, model_d, model_overrides or {}),
                                 ("train", TrainConfig, train_d, train_overrides or {})):
        src = {k: v for k, v in src.items() if v is not None}
        _check_keys(kind, cls, src)
        base.update(src)
        label.update({k: "--" + k.replace("_", "-") for k in src})
    for base in (model_d, train_d):
        for k in base:
            if k in label and k in RULES and base[k] is not None:
                base[k] = check_setting(label[k], base[k], *RULES[k])
    lr, min_lr = train_d.get("lr", TrainConfig.lr), train_d.get("min_lr", TrainConfig.min_lr)
    if min_lr > lr:
        who = label.get("min_lr", "min_lr")
        raise ValueError(f"{who} = {min_lr!r}: must be <= the learning rate "
                         f"({label.get('lr', 'lr')} = {lr!r})")
    return GPTConfig(**model_d), TrainConfig(**train_d)


