"""Encoder-only vs decoder-only vs prefix-LM vs encoder-decoder at matched parameter count.

  python experiments/compare_architectures.py --workdir runs [--steps 120] [--parallel 2]
  python experiments/compare_architectures.py --check          # parameter table only, no training
  python experiments/compare_architectures.py --results        # rebuild the tables from the events
  ./launch.sh sweep experiments/compare_architectures.py       # the same runs, plain sweep table
  ./launch.sh tensorboard runs/compare_architectures           # every run overlaid

Two tasks, one experiment directory (so TensorBoard overlays all six runs):
  lm_*   pretraining objectives on the embedded corpus python_stdlib/text: BERT-style encoder
         (mlm), GPT-style decoder (causal_lm), the same decoder as a prefix LM (prefix_lm) and a
         T5-style encoder-decoder (span_corruption);
  s2s_*  python_stdlib/docstrings (code -> docstring), where the encoder-decoder and a decoder-only
         prefix LM (objective seq2seq: [bos] source [sep] target) compete on the same task.
Sizes: the tiny family presets, with 4 layers for the encoder-only and decoder-only models and
2 + 2 layers with d_ff 384 for the encoder-decoder, which puts every total within ~6% of the
others (`--check` prints the counts from `transformer.summary.count_params`, and fails past 10%).
Every run sees the same batches of the same length for the same number of steps, so the same
number of tokens; each family keeps its own optimizer recipe from its config. The loss values
of different objectives are not comparable with each other (MLM scores 15% of the tokens,
span corruption scores sentinels and spans); compare curves within an objective, and the two
s2s_* runs directly. At the default size all six runs take under ~20 minutes on 2 CPU cores.

Writes <workdir>/compare_architectures/results.{csv,md}, eval_loss.png (the sweep runner's),
comparison.md (parameters, FLOPs per token, tokens seen, final metrics, and what the losses
score) and curves.png (train and eval loss against step, one panel per task).
"""

import os
import sys

from transformer import cli
from transformer.errors import ConfigError
from transformer.sweeps import results as sweep_results
from transformer.sweeps import runner as sweep_lib

BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'compare_architectures'
# Sized to finish in under 20 minutes on 2 shared CPU cores (6 runs, 2 at a time).
OVERRIDES = {'train.steps': 120, 'train.batch_size': 8, 'data.seq_len': 128,
             'data.vocab_size': 2048, 'train.eval_every': 30, 'train.eval_steps': 2,
             'train.log_every': 10, 'checkpoint.every': 60, 'opt.warmup_steps': 12,
             'log.samples': 1, 'log.sample_length': 16}
MATCH_TOLERANCE = 0.10
_ENCODER = {'config': 'configs/bert.py:tiny', 'model.num_layers': 4}
_DECODER = {'config': 'configs/gpt2.py:tiny', 'model.num_layers': 4}
_ENC_DEC = {'config': 'configs/t5.py:tiny', 'model.num_layers': 2, 'model.d_ff': 384}
_TEXT = {'data.source': 'python_stdlib/text'}
_PAIRS = {'data.source': 'python_stdlib/docstrings', 'objective': 'seq2seq'}


def sweep():
  return [
      {'run_name': 'lm_encoder_mlm', **_ENCODER, **_TEXT, 'objective': 'mlm'},
      {'run_name': 'lm_decoder_causal', **_DECODER, **_TEXT, 'objective': 'causal_lm'},
      {'run_name': 'lm_decoder_prefix', **_DECODER, **_TEXT, 'objective': 'prefix_lm'},
      {'run_name': 'lm_encdec_span', **_ENC_DEC, **_TEXT, 'objective': 'span_corruption',
       'data.targets_len': 32},
      # The decoder reads source and target in one stream: seq_len + targets_len of the other.
      {'run_name': 's2s_encdec', **_ENC_DEC, **_PAIRS, 'data.targets_len': 64},
      {'run_name': 's2s_decoder_prefix', **_DECODER, **_PAIRS, 'data.seq_len': 192},
  ]


def model_table(sweep):
  """[{run, family, objective, params, non_embedding, flops_per_token}] from the configs alone."""
  from transformer.monitoring import accounting as summary  # pylint: disable=import-outside-toplevel
  rows = []
  for r in sweep.runs:
    config = sweep.load_config(r)
    counts = summary.count_params(summary.abstract_model(config))
    rows.append({'run': r['name'], 'family': config.model.family, 'objective': config.objective,
                 'params': counts['total'], 'non_embedding': counts['non_embedding'],
                 'flops_per_token': summary.flops_per_token(config)['total_train']})
  return rows


def check_matched(rows, tolerance=MATCH_TOLERANCE):
  """Raise ConfigError when the parameter counts differ by more than `tolerance` of the smallest."""
  counts = [r['params'] for r in rows]
  spread = max(counts) / min(counts) - 1
  if spread > tolerance:
    raise ConfigError(f'parameter counts differ by {spread:.0%} (> {tolerance:.0%}): '
                      f'{ {r["run"]: r["params"] for r in rows} }; adjust the sizes in {__file__}')
  return spread


# What eval/loss and eval/accuracy score for each run (cross-entropy per scored token, nats).
SCORED = {
    'mlm': 'the ~15% masked tokens, seen from both sides',
    'causal_lm': 'every token, from the tokens before it',
    'prefix_lm': 'the continuation after a random prefix read bidirectionally',
    'span_corruption': 'sentinels + dropped spans (~15% of the text) given the rest',
    'seq2seq': 'docstring tokens + EOS given the code',
}
NOTE = """\
**What is compared.** `eval/loss` is each model's mean cross-entropy (nats) per *scored* token on
held-out data, and `eval/accuracy` its next-token accuracy on the same tokens, teacher-forced.
Which tokens are scored depends on the objective (column *scored tokens*), so:

- `s2s_encdec` vs `s2s_decoder_prefix` is the direct comparison: same code -> docstring pairs,
  same tokenizer, both score exactly the docstring tokens and EOS given the code (the decoder-only
  model reads `[bos] code [sep]` as a bidirectional prefix). Lower loss is better.
- the `lm_*` rows are **not** comparable with each other by loss: each number is on its own
  objective (MLM predicts 15% of the tokens with context on both sides, which is easier than
  predicting every token left to right; span corruption scores sentinels and spans).
  `lm_decoder_causal` and `lm_decoder_prefix` are closest (both predict text continuations;
  the prefix LM scores only the suffix, which has more context). Compare the `lm_*` runs by
  parameters, FLOPs per token and throughput, and each curve's shape; the T5 paper compares
  such pretraining objectives by fine-tuning them on downstream tasks (section 3.2, Table 2).

Every run has the same batch size, input length and number of steps on the same corpus
(`tokens_seen` counts the non-padding tokens of every stream the model reads, so the
encoder-decoder's count includes its decoder inputs). FLOPs per token are the training FLOPs per
output token from `transformer.summary.flops_per_token`.
"""


def comparison(models, results):
  """comparison.md's table: one row per architecture, from the configs and the event files."""
  by_run = {r['run']: r for r in results}
  head = ['run', 'family', 'objective', 'scored tokens', 'params', 'non_embedding',
          'train FLOPs/token', 'tokens_seen', 'final eval/loss', 'final eval/accuracy',
          'tokens/s', 'status']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for m in models:
    res = by_run.get(m['run'], {})
    cells = [m['run'], m['family'], m['objective'], SCORED.get(m['objective'], ''),
             f'{m["params"]:,}', f'{m["non_embedding"]:,}', f'{m["flops_per_token"]:.3g}'] + [
                 sweep_results.cell(res.get(k)) for k in ('tokens_seen', 'final_eval_loss',
                                                          'final_eval_accuracy', 'tokens_per_sec')]
    cells.append(res.get('status', 'pending'))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_curves(exp_dir, names, path):
  """Two panels (LM objectives, seq2seq): train/loss (lines) and eval/loss (dots) against step."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from transformer.monitoring.events import read_events
  fig = Figure(figsize=(11, 4.2), dpi=90)
  FigureCanvasAgg(fig)
  panels = {'lm_': fig.add_subplot(1, 2, 1), 's2s_': fig.add_subplot(1, 2, 2)}
  for name in names:
    run_dir = os.path.join(exp_dir, name)
    if not os.path.isdir(run_dir):
      continue
    scalars = read_events(run_dir)['scalars']
    ax = next((a for prefix, a in panels.items() if name.startswith(prefix)), None)
    if ax is None or 'train/loss' not in scalars:
      continue
    line, = ax.plot(*zip(*scalars['train/loss']), label=f'{name} (train)', linewidth=1.2)
    if scalars.get('eval/loss'):
      ax.plot(*zip(*scalars['eval/loss']), 'o--', color=line.get_color(), markersize=4,
              linewidth=0.8, label=f'{name} (eval)')
  titles = {'lm_': 'pretraining objectives (loss on own objective: not comparable across runs)',
            's2s_': 'code -> docstring: encoder-decoder vs decoder-only prefix LM'}
  for prefix, ax in panels.items():
    ax.set_title(titles[prefix], fontsize=9)
    ax.set_xlabel('train step (same batches of the same length for every run)')
    ax.set_ylabel('loss (nats per scored token)')
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


@cli.main
def main(argv=None):
  parser = cli.Parser('python experiments/compare_architectures.py', __doc__, config=False)
  parser.add_argument('--steps', type=int, default=None, help='train steps of every run')
  parser.add_argument('--parallel', type=int, default=2, help='runs at a time')
  parser.add_argument('--check', action='store_true', help='print the parameter table and exit')
  parser.add_argument('--results', action='store_true', help='only collect the results')
  args, overrides = parser.parse(argv)
  if args.steps:
    overrides['train.steps'] = str(args.steps)
  sweep = sweep_lib.Sweep(os.path.abspath(__file__), overrides)
  models = model_table(sweep)
  spread = check_matched(models)
  print(f'Parameter counts match within {spread:.1%}.')
  if args.check:
    print(comparison(models, []))
    return 0
  outcome = {} if args.results else sweep_lib.run(sweep, args.workdir, parallel=args.parallel)
  results = sweep_results.write_results(sweep, args.workdir)
  table = comparison(models, results)
  path = os.path.join(args.workdir, EXPERIMENT, 'comparison.md')
  with open(path, 'w') as f:
    f.write(f'# Architectures at matched parameter count\n\n{table}\n\n{NOTE}')
  curves = os.path.join(args.workdir, EXPERIMENT, 'curves.png')
  plot_curves(os.path.join(args.workdir, EXPERIMENT), [r['name'] for r in sweep.runs], curves)
  print(table)
  print(f'Wrote {path} and {curves}')
  return 1 if any(s in ('failed', 'interrupted') for s in outcome.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
