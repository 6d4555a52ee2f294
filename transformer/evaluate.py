"""Evaluate the latest checkpoint of a run: `./launch.sh eval --config X.py:size --workdir DIR`.

Seq2seq runs also decode log.decode.examples eval examples and report BLEU (and ROUGE).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import os
import sys

import jax

from transformer import cli
from transformer.errors import ConfigError
from transformer.training import evaluation, generation, optim, setup
from transformer.training.trainer import Trainer


def run(config, workdir):
  """Eval metrics of the run's latest checkpoint over train.eval_steps eval batches."""
  if not config.train.eval_steps:
    raise ConfigError('`train.eval_steps=0`: means no eval; give the number of eval batches, '
                      'e.g. --config.train.eval_steps=10')
  path = setup.run_dir(config, workdir)
  if not os.path.isdir(os.path.join(path, 'checkpoints')):
    raise ConfigError(f'no checkpoints in {path}; train first with the same --config and '
                      '--workdir')
  run_ = setup.prepare(config, workdir)
  state = run_.trainer.init_state()
  step, state, _ = run_.checkpointer(state, resuming=False).restore(Trainer.abstract(state))
  params = optim.eval_params(state)   # schedule-free: the averaged iterate, as in training
  metrics, _ = evaluation.evaluate(run_, params, run_.pipeline('eval'),
                                   jax.jit(run_.trainer.eval_step))
  decoded, _ = generation.decode_eval(run_, params, run_.pipeline('eval'), step)
  metrics.update({k[len('eval/'):]: v for k, v in decoded.items()})   # bleu, rouge*
  print(f'{run_.dir} step {step}: ' + ', '.join(f'eval/{k} {v:.4f}' for k, v in metrics.items()))
  return metrics


@cli.main
def main(argv=None):
  args, config = cli.parse(sys.argv[1:] if argv is None else argv,
                           prog='python -m transformer.evaluate')
  run(config, args.workdir)
  return 0


if __name__ == '__main__':
  sys.exit(main())
