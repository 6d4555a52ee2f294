"""DistilBERT on the embedded corpus: what a 2-layer student of a 4-layer teacher keeps, and how
much faster it is.

  python experiments/benchmark_distillation.py [--teacher_steps 300] [--student_steps 150] \
      [--workdir /tmp/distil_bench] [--out distillation.json]

Every model is DistilBERT-shaped (configs/bert.py:tiny without token types: d_model 128, 2 heads,
d_ff 512) on `python_stdlib/text` with our 2048-piece tokenizer, sequences of 64, batches of 16
(small enough for a few minutes on two CPU cores):

  teacher     4 layers, objective mlm, --teacher_steps
  student     2 layers, objective distillation from the teacher (distill.* defaults: T 2, alphas
              5 / 2 / 1, the student starting from teacher layers 0 and 2, embeddings and head)
  layers_only the same start, trained on the MLM loss alone (alpha_ce = alpha_cos = 0): what
              the initialisation gives without the teacher's targets
  scratch     2 layers, objective mlm from a random init: the same student without the teacher

Each student trains --student_steps with the same data, seed and schedule. Reported per model:
eval MLM loss and masked-token accuracy on --eval_steps batches of the validation split (the
eval of `distillation` is the student's MLM loss alone, as `mlm` reports it), and the median
forward time of one [16, 64] batch (jitted, after a warm-up); `share_of_teacher` is accuracy /
teacher accuracy and teacher loss / loss; `speedup` is teacher time / student time. Prints a
table and writes the JSON.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from transformer import config as config_lib
from transformer.training import loop, setup

BASE = {'model.type_vocab_size': 0, 'model.dropout_rate': 0.0, 'model.attention_dropout_rate': 0.0,
        'data.seq_len': 64, 'train.batch_size': 16, 'opt.warmup_steps': 20, 'train.log_every': 50,
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


def forward_seconds(config, workdir, repeats=20):
  """Median seconds of one jitted MLM forward over one train batch (the trained model)."""
  run = setup.prepare(config, workdir)
  state, ckpt, _, _ = loop.restore_or_init(run, run.latest_step())
  ckpt.close()
  model = run.trainer.model(state['params'])
  batch = next(run.pipeline('train').iterator((0, 0)))
  forward = nnx.jit(lambda m, x, s, p: m(x, s, p))
  args = [jnp.asarray(batch[k]) for k in ('inputs', 'inputs_segment_ids', 'inputs_positions')]
  forward(model, *args).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    forward(model, *args).block_until_ready()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


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
  rows['teacher']['forward_s'] = forward_seconds(teacher, args.workdir)
  rows['scratch']['forward_s'] = forward_seconds(
      _config('scratch', 'mlm', 2, args.student_steps, args.eval_steps, {}), args.workdir)
  ref = rows['teacher']
  for name, row in rows.items():
    row['forward_s'] = row.get('forward_s', rows['scratch']['forward_s'])
    row['share_of_teacher_accuracy'] = row['eval_accuracy'] / ref['eval_accuracy']
    row['share_of_teacher_loss'] = ref['eval_loss'] / row['eval_loss']
    row['speedup'] = ref['forward_s'] / row['forward_s']
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--teacher_steps', type=int, default=300)
  parser.add_argument('--student_steps', type=int, default=150)
  parser.add_argument('--eval_steps', type=int, default=20)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--out', default='distillation.json')
  args = parser.parse_args(argv)
  args.workdir = args.workdir or tempfile.mkdtemp(prefix='distil_bench_')
  rows = run(args)
  print(f'\nDistillation on python_stdlib/text ({jax.devices()[0].platform}; teacher '
        f'{args.teacher_steps} steps, students {args.student_steps}; workdir {args.workdir})')
  print(f'{"model":12} {"eval loss":>9} {"accuracy":>8} {"acc share":>9} {"loss share":>10} '
        f'{"forward ms":>10} {"speed-up":>8}')
  for name, r in rows.items():
    print(f'{name:12} {r["eval_loss"]:9.4f} {r["eval_accuracy"]:8.4f} '
          f'{r["share_of_teacher_accuracy"]:9.1%} {r["share_of_teacher_loss"]:10.1%} '
          f'{1e3 * r["forward_s"]:10.2f} {r["speedup"]:7.2f}x')
  with open(args.out, 'w') as f:
    json.dump({'args': vars(args), 'device': jax.devices()[0].device_kind, 'rows': rows}, f,
              indent=2)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
