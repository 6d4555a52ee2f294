"""Eval decoding in a real 2-process job (2 x 2 fake CPU devices, FSDP: every parameter is
split across both processes): every process joins the decode, process 0 logs eval/bleu and
writes the decodes, and the logged BLEU is sacrebleu's on them. Slow: the job starts pythons.
"""

import json
import os
import sysconfig

import pytest
import sacrebleu

from tests.e2e.test_multiprocess_train import Job, run_path
from transformer import config as config_lib
from transformer import data
from transformer.monitoring.events import read_events

pytestmark = pytest.mark.slow

STEPS, EXAMPLES = 4, 24
EXTRA = {'train.steps': str(STEPS), 'train.eval_every': str(STEPS), 'train.eval_steps': '4',
         'checkpoint.every': str(STEPS), 'objective': 'seq2seq', 'data.pack': 'false',
         'data.inputs_key': 'src', 'data.targets_key': 'tgt', 'data.targets_len': '32',
         'log.decode.examples': str(EXAMPLES), 'log.decode.max_new_tokens': '6',
         'log.decode.strategy': 'beam', 'log.decode.beam_size': '2', 'log.samples': '2',
         'mesh.shape': '(1,-1,1)', 'mesh.preset': 'fsdp', 'opt.warmup_steps': '1'}


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
  """A toy translation: each stdlib line to its words in reverse order."""
  path = tmp_path_factory.mktemp('pairs') / 'pairs.jsonl'
  with open(os.path.join(sysconfig.get_paths()['stdlib'], 'argparse.py'), encoding='utf-8') as f:
    lines = [line.strip() for line in f if len(line.split()) > 2]
  with open(path, 'w', encoding='utf-8') as f:
    for line in lines:
      f.write(json.dumps({'text': line, 'src': line, 'tgt': ' '.join(line.split()[::-1])}) + '\n')
  return str(path)


def test_two_processes_decode_together_and_process_0_logs(tmp_path, pairs):
  overrides = {**EXTRA, 'data.source': f'jsonl:{pairs}'}
  config = config_lib.load('configs/transformer.py:tiny', {
      **{k: v for k, v in overrides.items()}, 'data.vocab_size': '512', 'data.seq_len': '32'})
  data.get_tokenizer(config)   # trained once here, so both processes find it cached
  extra = ['--config', 'configs/transformer.py:tiny',
           *[f'--config.{k}={v}' for k, v in overrides.items()]]
  job = Job(str(tmp_path), pairs, extra=extra)
  codes = job.finish()
  assert codes == [0, 0], (codes, job.output(0)[-3000:], job.output(1)[-3000:])
  assert f'decoded {EXAMPLES} eval examples' in job.output(0)
  run = run_path(str(tmp_path))
  with open(os.path.join(run, 'decodes', f'step_{STEPS}.jsonl'), encoding='utf-8') as f:
    decodes = [json.loads(line) for line in f]
  assert len(decodes) == EXAMPLES
  events = read_events(run)
  [(step, bleu)] = events['scalars']['eval/bleu']
  want = sacrebleu.corpus_bleu([d['prediction'] for d in decodes],
                               [[d['reference'] for d in decodes]]).score
  assert step == STEPS and bleu == pytest.approx(want, abs=1e-4)
  assert decodes[0]['reference'] in events['text']['samples'][-1][1]
