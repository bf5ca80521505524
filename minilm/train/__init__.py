"""Training: the Trainer loop (one process or, through an engine, any process grid),
run configuration, checkpoints, metrics and generation."""

from . import metrics
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, load_toml, merge_config
from .generation import beam_search, generate, sample_next
from .parallel_trainer import ParallelTrainer
from .trainer import NonFiniteLoss, Trainer, TrainingInterrupted, evaluate_loss, plot_losses
from .training_state import load_model_weights, load_training_state, save_training_state

__all__ = [
    "NonFiniteLoss", "ParallelTrainer", "TrainConfig", "Trainer", "TrainingInterrupted",
    "beam_search", "evaluate_loss", "generate",
    "load_checkpoint", "load_model_weights", "load_toml", "load_training_state",
    "merge_config", "metrics", "plot_losses", "sample_next", "save_checkpoint",
    "save_training_state",
]
