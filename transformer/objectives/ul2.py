"""UL2's mixture of denoisers (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms",
section 3.1) for encoder-decoder and decoder-only models.

Every example (every packed piece, see data/packing.py) is corrupted by ONE denoiser, drawn with
`data.ul2_proportions` from `data.ul2_denoisers`, a tuple of (mode, mean span, rate):

  R  regular span corruption: T5's spans (span_corruption.py), `rate` of the tokens noise in
     spans of `mean span` tokens on average           paper: (3, 0.15), (8, 0.15)
  X  extreme span corruption, the same with long spans or a high rate
                                                      paper: (3, 0.5), (8, 0.5), (64, 0.15),
                                                             (64, 0.5)
  S  sequential (prefix LM): the text is cut in two, the prefix is the input and its
     continuation the target; the target's share of the text is drawn uniformly in
     [0, 2 * rate] (mean `rate`; the mean span is ignored)
                                                      paper: rate 0.5, a uniform split point

The default is the paper's seven denoisers. `data.ul2_proportions` = () samples them uniformly,
as the paper's reference code (its appendix, `ul2_objective` with rates=None) does; otherwise
one probability per denoiser, summing to 1. The mode token ([R] [X] [S], the registry's
`mode_r` / `mode_x` / `mode_s`) leads every example:

  encoder-decoder   inputs  = [mode] text_0 <extra_id_0> text_1 ... <extra_id_k> [eos]
                    targets = <extra_id_0> noise_0 ... <extra_id_k> noise_k [eos]
                    (S: inputs = [S] prefix [eos], targets = continuation [eos])
  decoder-only      one stream [mode] inputs [sep] targets, the inputs (without [eos]) its
                    prefix, as span corruption's with the mode token in [bos]'s place;
                    `data.denoise_attention` reads the prefix bidirectionally or causally

Spans are capped at the tokenizer's sentinel count (32), so at long lengths a high-rate denoiser
makes longer spans than its mean. Which denoiser a piece gets, and S's split, are the first draws
of the piece's rng, so `piece_lengths(n, key=)` predicts them from the piece's key exactly and a
row of mixed denoisers still packs full (on an encoder-decoder the packer also balances the two
streams, data/packing.py). Loss, prediction: span_corruption.SpanCorruption's.
"""

import dataclasses
import functools

import numpy as np

from transformer.data import special_tokens
from transformer.errors import ConfigError
from transformer.objectives import base
from transformer.objectives import span_corruption as sc

MODES = {'R': 'mode_r', 'X': 'mode_x', 'S': 'mode_s'}
EXAMPLE = "--config.data.ul2_denoisers=\"(('R', 3, 0.15), ('X', 64, 0.5), ('S', 0, 0.5))\""


@dataclasses.dataclass(frozen=True)
class Denoiser:
  mode: str          # 'R' | 'X' | 'S'
  mean_span: float   # R, X: mean noise span length
  rate: float        # R, X: noise density; S: mean share of the text that is target

  @property
  def token(self):
    """The registry name of its mode token."""
    return MODES[self.mode]


def _denoiser(entry):
  """A Denoiser from one (mode, mean span, rate) entry of data.ul2_denoisers; ConfigError."""
  try:
    mode, mean_span, rate = entry
    d = Denoiser(str(mode).upper(), float(mean_span), float(rate))
  except (TypeError, ValueError):
    raise ConfigError(f'`data.ul2_denoisers`: entry {entry!r} is not (mode, mean span, rate); '
                      f'e.g. {EXAMPLE}') from None
  if d.mode not in MODES:
    raise ConfigError(f'`data.ul2_denoisers`: mode {mode!r} in {entry!r} is not R, X or S; '
                      f'e.g. {EXAMPLE}')
  high = 0.5 if d.mode == 'S' else 1.0
  if not (0 < d.rate < high or (d.mode == 'S' and d.rate == high)):
    what = 'the mean target share of S' if d.mode == 'S' else 'the noise rate'
    raise ConfigError(f'`data.ul2_denoisers`: rate {rate!r} in {entry!r}: {what} must lie in '
                      f'(0, {high}{"]" if d.mode == "S" else ")"}; e.g. {EXAMPLE}')
  if d.mode != 'S' and not d.mean_span > 0:
    raise ConfigError(f'`data.ul2_denoisers`: mean span {mean_span!r} in {entry!r} must be > 0; '
                      f'e.g. {EXAMPLE}')
  return d


def mixture(data):
  """(denoisers, proportions) of config.data, checked; ConfigError names the bad key."""
  entries = tuple(data.ul2_denoisers)
  if not entries:
    raise ConfigError(f'`data.ul2_denoisers=()`: give at least one denoiser; e.g. {EXAMPLE}')
  denoisers = [_denoiser(e) for e in entries]
  given = tuple(data.ul2_proportions)
  if not given:
    return denoisers, np.full(len(denoisers), 1 / len(denoisers))
  try:
    p = np.asarray([float(v) for v in given])
  except (TypeError, ValueError):
    p = None
  if p is None or len(p) != len(denoisers) or (p < 0).any() or not np.isfinite(p).all():
    raise ConfigError(f'`data.ul2_proportions={given!r}`: give {len(denoisers)} probabilities '
                      '>= 0, one per denoiser of data.ul2_denoisers (or () for uniform)')
  if abs(p.sum() - 1) > 1e-3:
    raise ConfigError(f'`data.ul2_proportions={given!r}`: they sum to {p.sum():.4g}, not 1; '
                      'rescale them (or give () for uniform)')
  return denoisers, p / p.sum()


def suffix_length(n, share):
  """Text tokens of an n-token text that S makes the target: round(share * n) in 1..n-1."""
  return 0 if n < 2 else min(max(int(round(share * n)), 1), n - 1)


class UL2(sc.SpanCorruption):
  """The mixture of denoisers: one per example, its mode token first (module docstring)."""

  name = 'ul2'
  families = ('encoder_decoder', 'decoder')
  tokens = ('eos', 'sentinel', *MODES.values())
  min_piece = 2

  @classmethod
  def tokens_needed(cls, family):
    return ('sep', *cls.tokens) if family == 'decoder' else cls.tokens

  @classmethod
  def check_config(cls, config):
    mixture(config.data)

  def __init__(self, config, tokenizer):  # pylint: disable=super-init-not-called
    base.Objective.__init__(self, config, tokenizer)   # span corruption's own keys do not apply
    self.denoisers, self.proportions = mixture(config.data)
    self.sentinel_ids = list(tokenizer.sentinel_ids)
    self.mode_ids = {m: special_tokens.ids_of(tokenizer, t)[0] for m, t in MODES.items()}
    self.attention = config.data.get('denoise_attention', 'prefix')
    if self.attention not in sc.ATTENTION:
      raise ConfigError(f'`data.denoise_attention={self.attention!r}`: choose prefix or causal, '
                        'e.g. --config.data.denoise_attention=prefix')
    if self.family == 'decoder':
      self.stream_lengths = {'targets': self.seq_len}
      key, fix = 'seq_len', 32
    else:
      self.stream_lengths = {'inputs': self.seq_len, 'targets': self.targets_len}
      key, fix = 'targets_len', max(16, self.seq_len // 2)
    self.text_chunk_len = self._longest_chunk()
    if self.text_chunk_len < 2:
      raise ConfigError(f'`data.{key}={config.data[key]}`: too short for the UL2 denoisers of '
                        f'data.ul2_denoisers; raise it, e.g. --config.data.{key}={fix}')
    self.num_samples = int(config.log.samples)

  def draw(self, rng):
    """(denoiser, S's target share or None): a piece's first draws from its fresh rng."""
    d = self.denoisers[int(rng.choice(len(self.denoisers), p=self.proportions))]
    return d, (rng.uniform(0.0, 2 * d.rate) if d.mode == 'S' else None)

  def _text_lengths(self, d, n, share):
    """(inputs, targets) lengths of an n-token text, [eos] included, no mode token."""
    if d.mode == 'S':
      t = suffix_length(n, share)
      return n - t + 1, t + 1
    return sc.corrupted_lengths(n, d.rate, d.mean_span, len(self.sentinel_ids))

  def _lengths(self, i, t):
    if self.family == 'decoder':
      return {'targets': i + t + 1}         # [mode] inputs-without-[eos] [sep] targets
    return {'inputs': i + 1, 'targets': t}  # [mode] inputs | targets

  def _longest_chunk(self):
    """The longest n such that every text of 1..n tokens fits under every denoiser and split."""
    def fits(n):
      for d in self.denoisers:
        for share in ((0.0, 2 * d.rate) if d.mode == 'S' else (None,)):
          got = self._lengths(*self._text_lengths(d, n, share))
          if any(got[s] > self.stream_lengths[s] for s in got):
            return False
      return True
    n = 0
    while fits(n + 1):
      n += 1
    return n

  def piece_lengths(self, n, *, first, last, key=None):
    del first, last   # every piece is an example of its own
    if key is None:
      raise ValueError('UL2 piece lengths depend on the piece\'s denoiser: pass key=')
    d, share = self._drawn(tuple(key))
    return self._lengths(*self._text_lengths(d, n, share))

  @functools.lru_cache(maxsize=4096)
  def _drawn(self, key):
    """draw() from a piece's key (the packer asks for the same key many times)."""
    return self.draw(np.random.default_rng(key))

  def _denoised(self, text, rng):
    d, share = self.draw(rng)
    eos = self.tokenizer.eos_id
    if d.mode == 'S':
      k = len(text) - suffix_length(len(text), share)
      inputs, targets = base.int32([*text[:k], eos]), base.int32([*text[k:], eos])
    else:
      mask = sc.noise_mask(len(text), d.rate, d.mean_span, len(self.sentinel_ids), rng)
      inputs, targets = sc.corrupt(text, mask, self.sentinel_ids, eos)
    mode = self.mode_ids[d.mode]
    if self.family == 'decoder':
      return sc.one_stream(inputs, targets, mode, self.tokenizer.sep_id)
    return {'inputs': base.int32([mode, *inputs.tolist()]), 'targets': targets}

  def features(self, example, rng=None):
    text = np.asarray(example['text'], np.int32)[:self.text_chunk_len]
    return self._denoised(text, base.as_rng(rng))

  def piece(self, tokens, rng=None, *, first, last):
    del first, last   # the packer sized the piece with piece_lengths(key=): nothing is cut here
    return self._denoised(np.asarray(tokens, np.int32), base.as_rng(rng))

  def generation_prompt(self, ids):
    """The text in S mode (a continuation): [S] text [eos] for the encoder, [S] text [sep] on
    a decoder-only model, read as the prefix was in training."""
    tok, mode = self.tokenizer, self.mode_ids['S']
    if self.family == 'decoder':
      return [mode, *ids, tok.sep_id], self.attention == 'prefix'
    return [mode, *ids, tok.eos_id], False
