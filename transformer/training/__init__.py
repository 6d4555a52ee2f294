"""Training: run setup, the loop and its hooks, eval, the jitted steps, optimizers, checkpoints,
sharding, processes and signals. Each module is imported by name
(`from transformer.training import setup`); none is imported here."""

__all__ = ['checkpoint', 'console', 'distributed', 'evaluation', 'generation', 'hooks', 'loop',
           'optim', 'setup', 'sharding', 'signals', 'trainer']
