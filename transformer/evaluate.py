"""Evaluate the latest checkpoint of a run: `./launch.sh eval --config X.py:size --workdir DIR`.

Seq2seq runs also decode log.decode.examples eval examples and report BLEU (and ROUGE).

Zero- and few-shot evaluation by log-likelihood (GPT-3's; comparisons/fewshot.py has the tasks,
their prompt formats and metrics, training/fewshot.py the scoring) of any decoder-only model:

  ./launch.sh eval --workdir RUN_DIR --task NAME_OR_JSONL [--fewshot K] [--seed S] [--limit N]
                   [--train_file F] [--batch_size B] [--checkpoint latest|best] [--config.a.b=v]

RUN_DIR is one run's directory or an import-hf output (as for generate); causal and prefix LMs
alike (a prefix LM reads the prompt bidirectionally, as it was trained). Prints the metrics and
writes RUN_DIR/fewshot/<task>_<K>shot.json: the settings, the metrics and one record per example
(each choice's log-likelihood, tokens and characters; the predictions and whether correct).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import json
import os
import sys

from transformer import cli
from transformer import generate as generate_cli
from transformer.comparisons import fewshot as tasks_lib
from transformer.errors import ConfigError
from transformer.files import atomic_write
from transformer.training import evaluation, fewshot, generation, optim, setup
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
                                   run_.trainer.eval_fn())
  decoded, _ = generation.decode_eval(run_, params, run_.pipeline('eval'), step)
  metrics.update({k[len('eval/'):]: v for k, v in decoded.items()})   # bleu, rouge*
  print(f'{run_.dir} step {step}: ' + ', '.join(f'eval/{k} {v:.4f}' for k, v in metrics.items()))
  return metrics


def _fewshot_parser():
  parser = cli.Parser('python -m transformer.evaluate', __doc__, config=False, workdir=False)
  parser.add_argument('--workdir', required=True, help='a run directory or an import-hf output')
  parser.add_argument('--task', required=True, help=f'{", ".join(tasks_lib.TASKS)} or a .jsonl')
  parser.add_argument('--fewshot', type=int, default=0, help='shots before each example')
  parser.add_argument('--seed', type=int, default=0, help='draws the shots')
  parser.add_argument('--limit', type=int, default=0, help='score the first N examples; 0: all')
  parser.add_argument('--train_file', default=None, help='jsonl tasks: where shots come from')
  parser.add_argument('--batch_size', type=int, default=16, help='rows per forward pass')
  parser.add_argument('--checkpoint', choices=('latest', 'best'), default='latest')
  return parser


def _requests(run, task, k, seed):
  """(per example: its slice of the flat request list, the requests) of every test example."""
  spans, requests = [], []
  for i, example in enumerate(task.test):
    text = tasks_lib.prompt(task, example, tasks_lib.shots(task, i, k, seed))
    start = len(requests)
    for continuation in tasks_lib.continuations(task, example):
      requests.append(_request(run, text, continuation))
    spans.append(slice(start, len(requests)))
  return spans, requests


def _request(run, text, continuation):
  """The tokens of `text` + `continuation` split where the text's own tokens end (the
  harnesses' rule: the boundary tokenizes as in the whole string)."""
  encode = run.tokenizer.encode
  whole, context = encode(text + continuation), encode(text)
  cont = whole[len(context):] if whole[:len(context)] == context else encode(continuation)
  ids, bidirectional = run.objective.generation_prompt(context)
  return fewshot.Request(ids, cont or encode(continuation), bidirectional)


def run_fewshot(args, overrides):
  """Score --task with --fewshot shots on the model of --workdir; {metric: value}."""
  for flag in ('fewshot', 'limit'):
    if getattr(args, flag) < 0:
      raise ConfigError(f'--{flag}={getattr(args, flag)}: must be 0 or more')
  if args.batch_size < 1:
    raise ConfigError(f'--batch_size={args.batch_size}: must be a positive integer')
  run_dir = os.path.abspath(os.path.expanduser(args.workdir))
  config = generate_cli.load_config(run_dir, overrides)
  if config.model.family != 'decoder':
    raise ConfigError(f'--workdir {run_dir}: model.family={config.model.family}; few-shot '
                      'scoring reads decoder-only models (causal_lm, prefix_lm runs, GPT-2)')
  task = tasks_lib.load(args.task, train_file=args.train_file, limit=args.limit,
                        fewshot=args.fewshot)
  run_ = setup.prepare(config, os.path.dirname(run_dir))
  spans, requests = _requests(run_, task, args.fewshot, args.seed)
  model, loaded = generate_cli.load_model(run_, run_dir, args.checkpoint)
  pad = run_.tokenizer.pad_id
  scored = fewshot.score(model, requests, pad_id=0 if pad is None else pad,
                         vocab_limit=run_.tokenizer.vocab_size, batch_size=args.batch_size)
  make = (tasks_lib.choice_record if task.kind == tasks_lib.CHOICE
          else tasks_lib.completion_record)
  records = [make(example, scored[span]) for example, span in zip(task.test, spans)]
  metrics = tasks_lib.summary(task, records)
  path = _write(run_dir, task, args, loaded, metrics, records)
  print(f'{loaded}: {task.name} {args.fewshot}-shot, {len(records)} examples: ' +
        ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()) + f' -> {path}')
  return metrics


def _write(run_dir, task, args, loaded, metrics, records):
  path = os.path.join(run_dir, 'fewshot', f'{task.name}_{args.fewshot}shot.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  result = dict(task=args.task, kind=task.kind, fewshot=args.fewshot, seed=args.seed,
                model=loaded, examples=len(records), metrics=metrics,
                truncated=sum(r['truncated'] for r in records), records=records)
  with atomic_write(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1, ensure_ascii=False)
    f.write('\n')
  return path


def _is_fewshot(argv):
  return any(a.split('=')[0] in ('--task', '--fewshot') for a in argv)


@cli.main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if _is_fewshot(argv):
    run_fewshot(*_fewshot_parser().parse(argv))
    return 0
  args, config = cli.parse(argv, prog='python -m transformer.evaluate')
  run(config, args.workdir)
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
