"""Transformers in JAX/Flax NNX: encoder-only, decoder-only and encoder-decoder from one code path."""
