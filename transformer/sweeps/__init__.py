"""Sweeps: a Python file declares runs (grid, zipped, sample) or a search (study) over config
keys; the runner starts each run or trial as its own `python -m transformer.train` process and
collects the results.

  from transformer.sweeps import grid, zipped, sample, study, log_uniform, uniform, integer, choice
"""

from transformer.sweeps.declarations import (choice, grid, integer, log_uniform, sample, study,
                                             uniform, zipped)

__all__ = ['choice', 'grid', 'integer', 'log_uniform', 'sample', 'study', 'uniform', 'zipped']
