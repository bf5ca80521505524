"""Training: the Trainer loop, run configuration, checkpoints, metrics and generation."""

from . import metrics
from .checkpoint import (
    load_checkpoint,
    load_model_weights,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from .config import TrainConfig, load_toml, merge_config
from .generation import beam_search, generate, sample_next
from .trainer import Trainer, evaluate_loss, plot_losses

__all__ = [
    "TrainConfig", "Trainer", "beam_search", "evaluate_loss", "generate", "load_checkpoint",
    "load_model_weights", "load_toml", "load_training_state", "merge_config", "metrics",
    "plot_losses", "sample_next", "save_checkpoint", "save_training_state",
]
