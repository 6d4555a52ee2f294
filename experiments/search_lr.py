"""Learning rate, warmup and width of the tiny GPT-2 on the embedded corpus: an example search.

  ./launch.sh sweep experiments/search_lr.py --workdir runs [--parallel 2] [--slurm]
  ./launch.sh sweep experiments/search_lr.py --workdir runs --results    # table + plots again
  ./launch.sh tensorboard runs/gpt2_search

Twenty trials of at most 300 steps, proposed by TPE from the trials so far; the median pruner
stops a trial whose eval loss at an eval is worse than the median of the finished trials at
that step (after 4 finished trials, and not before step 100). The study is
runs/gpt2_search/study.db; run the same command again to continue it. The table, the best
trial's command line and Optuna's plots land in runs/gpt2_search/.
"""

from transformer.sweeps import choice, integer, log_uniform, study

BASE = 'configs/gpt2.py:tiny'
EXPERIMENT = 'gpt2_search'
OVERRIDES = {'train.steps': 300, 'train.batch_size': 16, 'train.eval_every': 50,
             'checkpoint.every': 50}


def search():
  return study({'opt.learning_rate': log_uniform(3e-4, 3e-2),
                'opt.warmup_steps': integer(0, 100),
                'model.d_model': choice([64, 128, 192])},
               metric='eval/loss', direction='min', trials=20, sampler='tpe',
               sampler_options={'n_startup_trials': 6}, pruner='median',
               pruner_options={'n_startup_trials': 4, 'n_warmup_steps': 100})
