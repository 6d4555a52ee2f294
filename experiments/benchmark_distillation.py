"""DistilBERT on the embedded corpus: what a 2-layer student of a 4-layer teacher keeps, and how
much faster it is.

  python experiments/benchmark_distillation.py [--teacher_steps 800] [--student_steps 250] \
      [--workdir /tmp/distil_bench] [--out distillation.json]

Every model is DistilBERT-shaped (configs/bert.py:tiny without token types: d_model 128, 2 heads,
d_ff 512) on `python_stdlib/text` with our 2048-piece tokenizer, sequences of 64, batches of 16,
AdamW at 1e-3 (the common 3e-3 leaves this post-norm encoder on the unigram plateau for hundreds
of steps), small enough for minutes on two CPU cores:

  teacher     4 layers, objective mlm, --teacher_steps
  student     2 layers, objective distillation from the teacher (distill.* defaults: T 2, alphas
              5 / 2 / 1, the student starting from teacher layers 0 and 2, embeddings and head)
  layers_only the same start, trained on the MLM loss alone (alpha_ce = alpha_cos = 0): what
              the initialisation gives without the teacher's targets
  scratch     2 layers, objective mlm from a random init: the same student without the teacher

Each student trains --student_steps with the same data, seed and schedule. Reported per model:
eval MLM loss and masked-token accuracy on --eval_steps batches of the validation split
(`distillation`'s eval/loss is the student's MLM loss alone, as `mlm` reports it), and the
fastest of 30 forwards of one [32, 128] batch (jitted, after a warm-up; teacher and student in
turn, so a busy spell of the shared machine slows both); `share_of_teacher` is accuracy /
teacher accuracy and teacher loss / loss; `speedup` is teacher time / student time, beside the
train FLOPs per token of each (transformer.monitoring.accounting). Prints a table and writes
the JSON. A --workdir that holds finished runs is reused (only the timing runs again).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from transformer import config as config_lib
from transformer.monitoring import accounting
from transformer.training import loop, setup

BASE = {'model.type_vocab_size': 0, 'model.dropout_rate': 0.0, 'model.attention_dropout_rate': 0.0,
        'data.seq_len': 64, 'train.batch_size': 16, 'opt.learning_rate': 1e-3,
        'opt.warmup_steps': 50, 'train.log_every': 50, 'log.attention_images': False,
        'log.attention_stats': False,
        'checkpoint.async_save': False}
STUDENTS = {   # name -> (objective, overrides)
    'student': ('distillation', {}),
    'layers_only': ('distillation', {'distill.alpha_ce': 0.0, 'distill.alpha_cos': 0.0}),
    'scratch': ('mlm', {}),
}


def _config(name, objective, layers, steps, eval_steps, overrides):
  values = {**BASE, 'objective': objective, 'model.num_layers': layers, 'train.steps': steps,
            'train.eval_every': steps, 'train.eval_steps': eval_steps,
            'checkpoint.every': steps, 'run_name': name, 'experiment': 'distillation',
            **overrides}
  return config_lib.load('configs/bert.py:tiny', {k: str(v) for k, v in values.items()})


def _train(config, workdir):
  t0 = time.perf_counter()
  last = loop.train(config, workdir, hooks=[])
  if not last:   # already trained under this workdir: read the final eval back
    with open(os.path.join(setup.run_dir(config, workdir), 'result.json')) as f:
      return json.load(f)
  result = {'eval_loss': float(last['eval/loss']), 'eval_accuracy': float(last['eval/accuracy']),
            'train_seconds': round(time.perf_counter() - t0, 1)}
  with open(os.path.join(setup.run_dir(config, workdir), 'result.json'), 'w') as f:
    json.dump(result, f)
  return result


def _forward(config, workdir):
  """A call of the jitted MLM forward of the model of `config` over one [32, 128] batch (fresh
  parameters: the time does not depend on their values)."""
  run = setup.prepare(config, workdir)
  model = run.trainer.model(run.trainer.init_state()['params'])
  tokens = jax.random.randint(jax.random.key(0), (32, 128), 5, run.tokenizer.vocab_size)
  args = (tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(128), tokens.shape))
  forward = nnx.jit(lambda m, *a: m(*a))
  forward(model, *args).block_until_ready()
  return lambda: forward(model, *args).block_until_ready()


def forward_seconds(configs, workdir, rounds=30):
  """{name: the fastest of `rounds` forwards} of each model, taken in turn (so a busy spell of
  the shared machine slows all of them, and the minimum is the least disturbed time)."""
  calls = {name: _forward(c, workdir) for name, c in configs.items()}
  best = dict.fromkeys(calls, float('inf'))
  for _ in range(rounds):
    for name, call in calls.items():
      t0 = time.perf_counter()
      call()
      best[name] = min(best[name], time.perf_counter() - t0)
  return best


def run(args):
  rows = {}
  teacher = _config('teacher', 'mlm', 4, args.teacher_steps, args.eval_steps, {})
  rows['teacher'] = _train(teacher, args.workdir)
  teacher_dir = setup.run_dir(teacher, args.workdir)
  for name, (objective, overrides) in STUDENTS.items():
    extra = dict(overrides, **({'distill.teacher': teacher_dir} if objective == 'distillation'
                               else {}))
    config = _config(name, objective, 2, args.student_steps, args.eval_steps, extra)
    rows[name] = _train(config, args.workdir)
  times = forward_seconds({'teacher': teacher, 'student': _config(
      'scratch', 'mlm', 2, args.student_steps, args.eval_steps, {})}, args.workdir)
  ref = rows['teacher']
  for name, row in rows.items():
    row['forward_s'] = times['teacher' if name == 'teacher' else 'student']
    row['train_flops_per_token'] = accounting.flops_per_token(
        teacher if name == 'teacher' else _config(name, 'mlm', 2, 1, 1, {}))['total_train']
    row['share_of_teacher_accuracy'] = row['eval_accuracy'] / ref['eval_accuracy']
    row['share_of_teacher_loss'] = ref['eval_loss'] / row['eval_loss']
    row['speedup'] = ref['forward_s'] / row['forward_s']
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--teacher_steps', type=int, default=800)
  parser.add_argument('--student_steps', type=int, default=250)
  parser.add_argument('--eval_steps', type=int, default=20)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--out', default='distillation.json')
  args = parser.parse_args(argv)
  args.workdir = args.workdir or tempfile.mkdtemp(prefix='distil_bench_')
  rows = run(args)
  print(f'\nDistillation on python_stdlib/text ({jax.devices()[0].platform}; teacher '
        f'{args.teacher_steps} steps, students {args.student_steps}; workdir {args.workdir})')
  print(f'{"model":12} {"eval loss":>9} {"accuracy":>8} {"acc share":>9} {"loss share":>10} '
        f'{"forward ms":>10} {"speed-up":>8} {"MFLOPs/token":>12}')
  for name, r in rows.items():
    print(f'{name:12} {r["eval_loss"]:9.4f} {r["eval_accuracy"]:8.4f} '
          f'{r["share_of_teacher_accuracy"]:9.1%} {r["share_of_teacher_loss"]:10.1%} '
          f'{1e3 * r["forward_s"]:10.2f} {r["speedup"]:7.2f}x '
          f'{r["train_flops_per_token"] / 1e6:12.2f}')
  with open(args.out, 'w') as f:
    json.dump({'args': vars(args), 'device': jax.devices()[0].device_kind, 'rows': rows}, f,
              indent=2)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
