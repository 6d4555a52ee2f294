"""Generate text with a trained run: `./launch.sh generate --workdir RUN_DIR --prompt TEXT`.

  python -m transformer.generate --workdir runs/default/gpt2_tiny --prompt "def main(" \\
      [--input_file F (one input per line)] [--strategy beam --beam_size 4 |
      --strategy sample --temperature 0.8 --top_p 0.9 --seed 0] [--max_new_tokens N]
      [--num_return N] [--checkpoint latest|best] [--config.model.dtype=bfloat16 ...]

RUN_DIR is one run's directory (config.json, tokenizer.model, checkpoints/) or the output of
`./launch.sh import-hf`. Each input is laid out as the run's objective saw text in training
(a decoder-only model continues [bos] + text; an encoder-decoder maps text + [eos] to an
output) and every output is printed on its own line, in input order; with --num_return N,
N lines per input, best first, each `score<TAB>text`. What was loaded goes to stderr.
Sampling draws each input's noise from --seed and the input's line (not its row in a batch of
--batch_size), so a prompt listed twice gives two samples, the same whatever --batch_size.
Outputs never hold an id past the tokenizer (a model may have more rows than it has ids).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import dataclasses
import os
import sys

import ml_collections
import numpy as np

from transformer import cli
from transformer import config as config_lib
from transformer.data import tokenizer as tokenizer_lib
from transformer.errors import ConfigError
from transformer.models import decoding
from transformer.objectives import base
from transformer.training import checkpoint, optim, setup
from transformer.training.trainer import Trainer

IMPORT_RECORD = 'tokenizer_info.json'   # beside an import-hf output's config.json


def _frozen(value):
  """JSON lists back into the tuples configs hold."""
  if isinstance(value, dict):
    return {k: _frozen(v) for k, v in value.items()}
  return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def load_config(run_dir, overrides):
  """The run's config.json as a validated ConfigDict, ready to rebuild its model here."""
  path = os.path.join(run_dir, 'config.json')
  if not os.path.isfile(path):
    raise ConfigError(f'--workdir {run_dir}: no config.json; give a run directory '
                      '(<workdir>/<experiment>/<run_name>) or an import-hf output')
  config = ml_collections.ConfigDict(_frozen(setup.read_run_config(path)))
  if 'decode' not in config.log:   # runs from before log.decode existed
    config.log.decode = ml_collections.ConfigDict(dict(
        examples=0, max_new_tokens=0, metrics='auto',
        **dataclasses.asdict(decoding.Spec())))
    del config.log.decode['num_return']
  if os.path.isfile(os.path.join(run_dir, IMPORT_RECORD)):
    config.checkpoint.init_from = run_dir   # its tokenizer is the one recorded there
    if config.model.positions == 'learned':   # the preset's data lengths may pass its table
      config.data.seq_len = min(config.data.seq_len, config.model.max_len)
      config.data.targets_len = min(config.data.targets_len, config.model.max_len)
  else:
    config.checkpoint.init_from = ''
    # tokenizer.model (ours) or tokenizer/ (a fine-tuned Hugging Face checkpoint's)
    config.data.tokenizer = (tokenizer_lib.recorded_tokenizer(run_dir) or
                             os.path.join(run_dir, tokenizer_lib.RUN_TOKENIZER))
  config_lib.apply_overrides(config, overrides)
  return config_lib.validate(config)


def load_model(run, run_dir, which):
  """(the model with the chosen checkpoint's parameters, a line saying which one)."""
  if run.config.checkpoint.init_from:   # an import-hf output: its one step
    abstract = run.trainer.init_state()['params']
    params, missing, _ = checkpoint.load_pretrained(run_dir, abstract)
    if missing:
      raise ConfigError(f'--workdir {run_dir}: the checkpoint lacks {missing[0]}')
    return run.trainer.model(params), f'{run_dir} (import-hf)'
  run = dataclasses.replace(run, dir=run_dir)
  if run.latest_step() is None:
    raise ConfigError(f'--workdir {run_dir}: no checkpoints yet; train first')
  state = run.trainer.init_state()
  ckpt = run.checkpointer(state, resuming=False)
  step = ckpt.best_step() if which == 'best' else None
  step, state, _ = ckpt.restore(Trainer.abstract(state), step)
  ckpt.close()
  return run.trainer.model(optim.eval_params(state)), f'{run_dir} step {step} ({which})'


def read_inputs(args):
  if args.input_file:
    with open(args.input_file, encoding='utf-8') as f:
      return [line.rstrip('\n') for line in f if line.strip()]
  return [args.prompt]


def generate(run, model, texts, spec, *, max_new_tokens, batch_size):
  """[[(score, text), ...] per input]: spec.num_return outputs each, best first."""
  objective, tokenizer = run.objective, run.tokenizer
  prompts = [objective.generation_prompt(tokenizer.encode(t)) for t in texts]
  results = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    tokens, segs = base.pad_rows([p for p, _ in chunk], tokenizer.pad_id)
    out = decoding.decode(model, tokens, segment_ids=segs, max_new_tokens=max_new_tokens,
                          eos_id=tokenizer.eos_id, spec=spec, prefix_lm=chunk[0][1],
                          vocab_limit=tokenizer.vocab_size,
                          index=np.arange(start, start + len(chunk)))
    ids, scores = np.asarray(out.tokens), np.asarray(out.scores)
    results += [[(float(scores[b, r]), tokenizer.decode(base.until_eos(ids[b, r].tolist(),
                                                                        tokenizer.eos_id)))
                 for r in range(ids.shape[1])] for b in range(ids.shape[0])]
  return results


def _parser():
  parser = cli.Parser('python -m transformer.generate', __doc__, config=False, workdir=False)
  parser.add_argument('--workdir', required=True, help='a run directory or an import-hf output')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--prompt', help='one input text')
  source.add_argument('--input_file', help='a text file, one input per line')
  parser.add_argument('--checkpoint', choices=('latest', 'best'), default='latest')
  parser.add_argument('--max_new_tokens', type=int, default=64)
  parser.add_argument('--batch_size', type=int, default=16, help='inputs decoded together')
  defaults = decoding.Spec()
  for field in dataclasses.fields(decoding.Spec):
    parser.add_argument(f'--{field.name}', type=type(getattr(defaults, field.name)),
                        default=getattr(defaults, field.name))
  return parser


@cli.main
def main(argv=None):
  args, overrides = _parser().parse(sys.argv[1:] if argv is None else argv)
  run_dir = os.path.abspath(os.path.expanduser(args.workdir))
  spec = decoding.Spec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(decoding.Spec)})
  spec.validate('--')
  if args.batch_size < 1:
    raise ConfigError(f'--batch_size={args.batch_size}: must be a positive integer')
  if args.input_file and not os.path.isfile(args.input_file):
    raise ConfigError(f'--input_file {args.input_file}: no such file')
  config = load_config(run_dir, overrides)
  run = setup.prepare(config, os.path.dirname(run_dir))
  model, loaded = load_model(run, run_dir, args.checkpoint)
  print(f'generating with {loaded}: {config.model.family}, {spec.strategy}', file=sys.stderr)
  for outputs in generate(run, model, read_inputs(args), spec, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size):
    for score, text in outputs:
      print(text if spec.num_return == 1 else f'{score:.4f}\t{text}')
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
