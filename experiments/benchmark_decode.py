"""Decoding speed: tokens/s of greedy, sampling and beam-4 decoding, with and without caches.

  python experiments/benchmark_decode.py --models gpt2:tiny,gpt2:small,t5:tiny,t5:small \\
      --strategies greedy,sample,beam --batch 8 --prompt_len 64 --new_tokens 64 --out decode.json

Each row decodes one random batch (batch x prompt_len tokens) with a randomly initialised model
of a family config (configs/gpt2.py, configs/t5.py at that size) through
transformer.models.decoding.decode, EOS disabled so every row makes all new_tokens. Cache modes:

  full   the KV cache, and for encoder-decoders the cross-attention keys/values of the encoder
         output computed once (what generation uses)
  self   encoder-decoders only: the KV cache, but cross-attention keys/values projected from
         the encoder output again at every step (the decoding before the cached memory)
  none   (--cache_modes ...,none) the whole model re-run over everything so far every step

  compile_s        the first call (trace + compile + one run)
  seconds          median of --repeats timed calls after it (block_until_ready)
  tokens_per_s     batch x new_tokens / seconds: output tokens per second (a beam row makes
                   new_tokens tokens for each of its beams; only the best is counted)

`speedups` in the JSON is cached ('full') over 'self' per model and strategy: the target is at
least 2x for encoder-decoders at 64 new tokens. Any --config.KEY=VALUE applies to every model.
"""

import json
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

from transformer import cli
from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError
from transformer.models import decoding

CONFIGS = {'gpt2': 'configs/gpt2.py', 't5': 'configs/t5.py'}
SPECS = {'greedy': decoding.Spec(), 'sample': decoding.Spec('sample', temperature=0.8, top_p=0.9),
         'beam': decoding.Spec('beam', beam_size=4, alpha=0.6)}


def build(name, overrides):
  """(config, randomly initialised model) of 'gpt2:small'-style `name`."""
  family, _, size = name.partition(':')
  if family not in CONFIGS:
    raise ConfigError(f'--models {name}: choose among {", ".join(CONFIGS)} (e.g. t5:small)')
  config = config_lib.load(f'{CONFIGS[family]}:{size or "tiny"}', overrides)
  config.model.vocab_size = config.model.vocab_size or config.data.vocab_size
  return config, models.build(config.model, rngs=nnx.Rngs(0))


def _timed(fn, repeats):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def row(name, config, model, strategy, cache, args):
  """One measurement as a JSON-ready dict."""
  rng = np.random.default_rng(0)
  inputs = rng.integers(4, config.model.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
  fn = lambda: decoding.decode(model, inputs, max_new_tokens=args.new_tokens, eos_id=-1,
                               spec=SPECS[strategy], cache=cache, prefix_lm=False).tokens
  compile_s, seconds = _timed(fn, args.repeats)
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return dict(model=name, family=config.model.family, params=int(params), strategy=strategy,
              cache=cache, batch=args.batch, prompt_len=args.prompt_len,
              new_tokens=args.new_tokens, compile_s=compile_s, seconds=seconds,
              tokens_per_s=args.batch * args.new_tokens / seconds)


def speedups(rows):
  """{'t5:small/greedy': full tokens/s over self tokens/s} where both were measured."""
  by = {(r['model'], r['strategy'], r['cache']): r['tokens_per_s'] for r in rows}
  return {f'{m}/{s}': by[m, s, 'full'] / by[m, s, 'self'] for (m, s, c) in by
          if c == 'self' and (m, s, 'full') in by}


def markdown(rows, ratios):
  lines = ['| model | strategy | cache | batch x prompt x new | compile s | s | tokens/s |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["model"]} | {r["strategy"]} | {r["cache"]} | {r["batch"]} x '
                 f'{r["prompt_len"]} x {r["new_tokens"]} | {r["compile_s"]:.1f} | '
                 f'{r["seconds"]:.3f} | {r["tokens_per_s"]:.1f} |')
  lines += [''] + [f'cached cross-attention speedup {k}: {v:.2f}x' for k, v in ratios.items()]
  return '\n'.join(lines)


def _parser():
  parser = cli.Parser('python experiments/benchmark_decode.py', __doc__, config=False,
                      workdir=False)
  parser.add_argument('--models', default='gpt2:tiny,gpt2:small,t5:tiny,t5:small')
  parser.add_argument('--strategies', default='greedy,sample,beam')
  parser.add_argument('--cache_modes', default='full,self')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--prompt_len', type=int, default=64)
  parser.add_argument('--new_tokens', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default='', help='write the rows and speedups as JSON here')
  return parser


@cli.main
def main(argv=None):
  args, overrides = _parser().parse(sys.argv[1:] if argv is None else argv)
  strategies = [s for s in args.strategies.split(',') if s]
  modes = [m for m in args.cache_modes.split(',') if m]
  for s in strategies:
    if s not in SPECS:
      raise ConfigError(f'--strategies {s}: choose among {", ".join(SPECS)}')
  for m in modes:
    if m not in decoding.CACHE_MODES:
      raise ConfigError(f'--cache_modes {m}: choose among {", ".join(decoding.CACHE_MODES)}')
  rows = []
  for name in [m for m in args.models.split(',') if m]:
    config, model = build(name, overrides)
    for strategy in strategies:
      for cache in modes:
        if cache == 'self' and config.model.family != 'encoder_decoder':
          continue   # decoder-only models have no cross-attention
        rows.append(row(name, config, model, strategy, cache, args))
        print(f'{name} {strategy} {cache}: {rows[-1]["tokens_per_s"]:.1f} tokens/s', flush=True)
  ratios = speedups(rows)
  print(markdown(rows, ratios))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(dict(device=jax.devices()[0].device_kind, backend=jax.default_backend(),
                     rows=rows, speedups=ratios), f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
