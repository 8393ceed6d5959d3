"""Training of the sequential recommenders: windowed causal batches, the trainer loop, checkpoints."""
