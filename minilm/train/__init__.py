"""Training: the Trainer loop, checkpoints, metrics and generation."""
