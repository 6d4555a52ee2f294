"""What to decode with: `Spec`, one frozen (hashable, so jit-static) description of a strategy.

  Spec()                                              greedy
  Spec('sample', temperature=0.8, top_p=0.9, seed=1)  nucleus sampling, reproducible by seed
  Spec('beam', beam_size=4, alpha=0.6)                beam search, GNMT length penalty

`Spec.from_mapping(config.log.decode)` reads the keys it knows from a config section; `validate`
names a bad key in one line (`log.decode.top_p=1.5`: ...).
"""

import dataclasses
import math

from transformer.errors import ConfigError

STRATEGIES = ('greedy', 'sample', 'beam')
# Beam scores are log P(y) / penalty(|y|), |y| counting the new tokens and the EOS:
#   gnmt:   ((5 + |y|) / 6) ** alpha   (Wu et al. 2016; t5x, the 2017 Transformer: alpha 0.6)
#   length: |y| ** alpha               (Hugging Face `length_penalty`)
LENGTH_NORMS = ('gnmt', 'length')
# When an example's beam search stops (Hugging Face's `early_stopping`):
#   never: when no live beam can still beat the worst of the beam_size finished ones (exact)
#   false: the same test, but assuming live beams end at the current length (HF's default)
#   true:  as soon as beam_size hypotheses have finished
EARLY_STOPPING = ('never', 'false', 'true')


@dataclasses.dataclass(frozen=True)
class Spec:
  """A decoding strategy and its parameters (the fields a strategy does not use are ignored)."""
  strategy: str = 'greedy'     # greedy | sample | beam
  temperature: float = 1.0     # sample: logits / temperature before top_k / top_p
  top_k: int = 0               # sample: only the k most likely tokens (0: all)
  top_p: float = 1.0           # sample: only the smallest set holding probability >= top_p
  seed: int = 0                # sample: the PRNG seed; the same seed draws the same tokens
  beam_size: int = 4           # beam: hypotheses kept per input
  alpha: float = 0.6           # beam: length penalty exponent (0: raw log-probabilities)
  length_norm: str = 'gnmt'    # beam: one of LENGTH_NORMS
  early_stopping: str = 'never'  # beam: one of EARLY_STOPPING
  num_return: int = 1          # outputs per input: the n best beams, or n samples

  @classmethod
  def from_mapping(cls, mapping):
    """A Spec from the keys of `mapping` (a dict or ConfigDict) that name fields."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(mapping).items() if k in fields})

  def validate(self, prefix=''):
    """Raise a one-line ConfigError naming `{prefix}{key}` for the first bad field."""
    def bad(key, msg):
      raise ConfigError(f'`{prefix}{key}={getattr(self, key)!r}`: {msg}')
    for key, allowed in (('strategy', STRATEGIES), ('length_norm', LENGTH_NORMS),
                         ('early_stopping', EARLY_STOPPING)):
      if getattr(self, key) not in allowed:
        bad(key, f'choose one of {", ".join(allowed)}')
    if not (math.isfinite(self.temperature) and self.temperature > 0):
      bad('temperature', 'must be a finite number > 0 (near 0: nearly greedy), e.g. 0.8')
    if self.top_k < 0:
      bad('top_k', 'must be >= 0 (0: no top-k cut)')
    if not 0 < self.top_p <= 1:
      bad('top_p', 'must be in (0, 1] (1: no nucleus cut), e.g. 0.9')
    if self.beam_size < 1:
      bad('beam_size', 'must be a positive integer, e.g. 4')
    if not math.isfinite(self.alpha):
      bad('alpha', 'must be a finite number (0: no length penalty; GNMT uses 0.6)')
    if self.num_return < 1:
      bad('num_return', 'must be a positive integer')
    if self.strategy == 'greedy' and self.num_return > 1:
      bad('num_return', 'greedy decoding has one output per input; use strategy sample or beam')
    if self.strategy == 'beam' and self.num_return > self.beam_size:
      bad('num_return', f'at most beam_size={self.beam_size} beams can be returned')
    return self


GREEDY = Spec()
