"""Training: run setup, the loop, the jitted steps, optimizers, checkpoints, sharding, processes."""
