"""Tensors as committed bytes: flattening a training state, its digests, checkpoint files and deltas."""
