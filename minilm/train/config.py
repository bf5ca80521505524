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

__all__ = ["TrainConfig", "load_toml", "merge_config"]


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
    progress: bool = True
    plot: bool = True
    # parallelism (under mpiexec): dp defaults to world size / (tp * pp)
    dp: int | None = None
    tp: int = 1
    pp: int = 1
    zero: int = 0
    micro_batches: int = 1
    schedule: str = "1f1b"
    bucket_mb: float = 25.0

    def __post_init__(self) -> None:
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


def load_toml(path: str | Path) -> dict:
    """Parse a TOML config file into {"model": {...}, "train": {...}}."""
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
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
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
    for kind, cls, base, src in (("model", GPTConfig, model_d, (toml or {}).get("model", {})),
                                 ("train", TrainConfig, train_d, (toml or {}).get("train", {}))):
        _check_keys(kind, cls, src)
        base.update(src)
    for kind, cls, base, src in (("model", GPTConfig, model_d, model_overrides or {}),
                                 ("train", TrainConfig, train_d, train_overrides or {})):
        src = {k: v for k, v in src.items() if v is not None}
        _check_keys(kind, cls, src)
        base.update(src)
    return GPTConfig(**model_d), TrainConfig(**train_d)


