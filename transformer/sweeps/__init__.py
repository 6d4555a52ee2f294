"""Sweeps: a Python file declares runs (grid, zipped, sample) over config keys; the runner starts
each as its own `python -m transformer.train` process and collects the results.

  from transformer.sweeps import grid, zipped, sample, log_uniform, uniform, choice
"""

from transformer.sweeps.declarations import choice, grid, log_uniform, sample, uniform, zipped

__all__ = ['choice', 'grid', 'log_uniform', 'sample', 'uniform', 'zipped']
