"""Packing efficiency (non-padding share of every token slot) of the real data pipeline.

  python experiments/benchmark.py --packing [--seq_lens 128,256,512] [--batches 20] \
      [--out packing.json]

Pretraining objectives (full packing, data/packing.py) on the embedded corpus
`python_stdlib/text`: causal LM and prefix LM (configs/gpt2.py), MLM (configs/bert.py), span
corruption (configs/t5.py, targets_len = seq_len / 4 as in T5 tiny), UL2's mixture of
denoisers on a decoder (configs/gpt2.py) and an encoder-decoder (configs/t5.py, targets_len =
seq_len / 2: its X and S denoisers have long targets). Pair data (seq2seq on
`gettext_catalogs/en_de` and `python_stdlib/docstrings`, configs/t5.py): the best-fit window of
packing.PAIR_WINDOW open rows against one open row (the greedy packer it replaces), on the same
examples. Each row is --batches train batches of 16 rows from the start of the data.
"""

import sys

import numpy as np

from transformer import config as config_lib, data, objectives
from transformer.data import packing
from transformer.training import setup

PRETRAINING = (('causal_lm', 'configs/gpt2.py:tiny'), ('prefix_lm', 'configs/gpt2.py:tiny'),
               ('mlm', 'configs/bert.py:tiny'), ('span_corruption', 'configs/t5.py:tiny'),
               ('ul2', 'configs/gpt2.py:tiny'), ('ul2', 'configs/t5.py:tiny'))
PAIRS = ('gettext_catalogs/en_de', 'python_stdlib/docstrings')
BATCH = 16


def _pipeline(spec, overrides):
  config = config_lib.load(spec, {k: str(v) for k, v in overrides.items()})
  tokenizer = data.get_tokenizer(config)
  config = setup.resolve(config, tokenizer)
  return data.Pipeline(config, objectives.get(config, tokenizer), tokenizer)


def pretraining_row(objective, spec, seq_len, count):
  overrides = {'objective': objective, 'data.seq_len': seq_len, 'train.batch_size': BATCH,
               'model.max_len': max(seq_len, 256)}
  if objective == 'span_corruption':
    overrides['data.targets_len'] = seq_len // 4
  elif objective == 'ul2' and 't5' in spec:
    overrides['data.targets_len'] = seq_len // 2
  pipe = _pipeline(spec, overrides)
  it = pipe.iterator()
  batches = [next(it) for _ in range(count)]
  first = next(iter(pipe.stream_lengths))
  segments = np.mean([b[f'{first}_segment_ids'].max(axis=1).mean() for b in batches])
  return {'objective': objective, 'source': 'python_stdlib/text', 'mode': pipe.mode,
          'seq_len': seq_len, 'targets_len': int(pipe.config.data.targets_len),
          'packing_efficiency': packing.fill(*batches), 'segments_per_row': float(segments),
          'per_stream': {s: float(np.mean([(b[f'{s}_segment_ids'] > 0).mean() for b in batches]))
                         for s in pipe.stream_lengths}}


def pair_row(source, seq_len, count):
  pipe = _pipeline('configs/t5.py:tiny', {'objective': 'seq2seq', 'data.source': source,
                                          'data.seq_len': seq_len, 'data.targets_len': seq_len,
                                          'train.batch_size': BATCH})
  row = {'objective': 'seq2seq', 'source': source, 'mode': pipe.mode, 'seq_len': seq_len,
         'targets_len': seq_len}
  for name, window in (('packing_efficiency', packing.PAIR_WINDOW), ('greedy_efficiency', 1)):
    gen = packing.batches(pipe.examples(0), pipe.stream_lengths, BATCH, True, window=window)
    row[name] = packing.fill(*[b for b, _ in (next(gen) for _ in range(count))])
  return row


def run(args):
  rows = []
  for seq_len in args.seq_lens:
    for objective, spec in PRETRAINING:
      print(f'packing: {objective} at {seq_len} ...', file=sys.stderr, flush=True)
      rows.append(pretraining_row(objective, spec, seq_len, args.batches))
    for source in PAIRS:
      print(f'packing: seq2seq {source} at {seq_len} ...', file=sys.stderr, flush=True)
      rows.append(pair_row(source, seq_len, args.batches))
  return {'meta': {'batches': args.batches, 'rows_per_batch': BATCH}, 'rows': rows}


def markdown(result):
  lines = [f'### Packing efficiency: non-padding share of every slot, {result["meta"]["batches"]} '
           f'batches of {BATCH} rows', '',
           '| objective | source | mode | seq_len (+targets) | efficiency | greedy (1 open row) | '
           'segments/row |', '|' + '---|' * 7]
  for r in result['rows']:
    length = f'{r["seq_len"]}+{r["targets_len"]}' if r['targets_len'] else str(r['seq_len'])
    greedy = f'{r["greedy_efficiency"]:.3f}' if 'greedy_efficiency' in r else '-'
    segments = f'{r["segments_per_row"]:.1f}' if 'segments_per_row' in r else '-'
    lines.append(f'| {r["objective"]} | {r["source"]} | {r["mode"]} | {length} | '
                 f'{r["packing_efficiency"]:.4f} | {greedy} | {segments} |')
  return '\n'.join(lines)
