"""Training: a resumable accelerate loop, checkpoints, and per-model objectives."""
