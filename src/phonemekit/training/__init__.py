"""Training: the one training loop and the experiments built on it (train-all, leave-one-speaker-out, leaky twins)."""
