"""Evaluate the latest checkpoint of a run: `./launch.sh eval --config X.py:size --workdir DIR`."""

import os
import sys

import jax

from configs import common
from transformer import checkpoint, cli, data, objectives, sharding
from transformer.errors import ConfigError
from transformer.train import evaluate, fingerprint, resolve, run_dir, total_steps
from transformer.trainer import Trainer


def run(config, workdir):
  out = run_dir(config, workdir)
  if not config.train.eval_steps:
    raise ConfigError('`train.eval_steps=0`: means no eval; give the number of eval batches, '
                      'e.g. --config.train.eval_steps=10')
  ckpt_dir = os.path.join(out, 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f'no checkpoints in {out}; train first with the same --config and --workdir')
  tokenizer = data.get_tokenizer(config)
  config = resolve(config, tokenizer)
  objective = objectives.get(config, tokenizer)
  trainer = Trainer.create(config, objective, sharding.make_mesh(config.mesh), total_steps(config))
  state = trainer.init_state()
  ckpt = checkpoint.Checkpointer(ckpt_dir, every=config.checkpoint.every, keep=config.checkpoint.keep,
                                 keep_best=config.checkpoint.keep_best,
                                 fingerprint=fingerprint(config, state),
                                 model_defaults=common.MODEL_DEFAULTS)
  step, state, _ = ckpt.restore(Trainer.abstract(state))
  pipeline = data.Pipeline(config, objective, tokenizer, split='eval',
                           process_index=jax.process_index(), process_count=jax.process_count())
  metrics, _ = evaluate(trainer, config, state['params'], pipeline, jax.jit(trainer.eval_step))
  print(f'{out} step {step}: ' + ', '.join(f'eval/{k} {v:.4f}' for k, v in metrics.items()))
  return metrics


def main(argv=None):
  args, config = cli.parse(argv if argv is not None else sys.argv[1:])
  try:
    run(config, args.workdir)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
