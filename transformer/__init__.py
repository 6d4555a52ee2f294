"""Transformers in JAX/Flax NNX: encoder-only, decoder-only and encoder-decoder from one code path.

The rooms (docs/ARCHITECTURE.md draws their import layers): models, data, objectives, monitoring,
training, hf, sweeps, comparisons; the entry points are `python -m transformer.<verb>`.
Nothing is imported here, so `import transformer.<room>` loads only what it needs."""

__all__ = ['comparisons', 'data', 'hf', 'models', 'monitoring', 'objectives', 'sweeps',
           'training']
