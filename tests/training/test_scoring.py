"""Per-example scoring of a fixed test list (transformer/training/scoring.py): the comparison's
protocol. Two families scored from one file see the same example ids and the same scored tokens
(seq2seq with matched truncation), ranking scores every choice, a head scores its argmax, and a
bad score file is refused in one line."""

import json

import numpy as np
import pytest

from transformer import config as config_lib
from transformer.errors import ConfigError
from transformer.training import scoring, setup

SMALL = {'model.d_model': 32, 'model.d_ff': 64, 'model.num_heads': 2, 'model.head_dim': 16,
         'model.num_layers': 1, 'data.vocab_size': 300, 'train.batch_size': 4,
         'data.tokenizer_train_examples': 200, 'log.samples': 0, 'mesh.shape': '(1, 1, 1)',
         'train.eval_steps': 1, 'log.decode.max_new_tokens': 4}
WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split()
I, T = 12, 6    # task lengths: source tokens + EOS, target tokens + EOS


def _pair(k):
  rng = np.random.default_rng(k)
  return {'inputs': ' '.join(rng.choice(WORDS, 5 + k % 11)),
          'targets': ' '.join(rng.choice(WORDS, 1 + k % 9))}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp('score')
  train, test = root / 'train.jsonl', root / 'test.jsonl'
  train.write_text(''.join(json.dumps(_pair(k)) + '\n' for k in range(200)))
  test.write_text(''.join(json.dumps({'id': f'ex{k}', **_pair(1000 + k)}) + '\n'
                          for k in range(10)))
  choices = root / 'choices.json'
  choices.write_text(json.dumps(['alpha beta', 'gamma', 'mu mu mu']))
  return root, str(train), str(test), str(choices)


def _run(files, family, tokenizer='', **extra):
  root, train, test, _ = files
  lengths = ({'data.seq_len': I, 'data.targets_len': T} if family == 'encoder_decoder' else
             {'data.seq_len': I + T + 1, 'data.targets_len': T})
  config = config_lib.load('configs/t5.py:tiny', {
      **SMALL, **lengths, 'model.family': family, 'objective': 'seq2seq',
      'data.source': 'jsonl:' + train, 'data.tokenizer': tokenizer, 'log.score.file': test,
      **extra})
  run = setup.prepare(config, str(root / family))
  return run, run.trainer.init_state()['params']


@pytest.fixture(scope='module')
def runs(files):
  encdec = _run(files, 'encoder_decoder')
  decoder = _run(files, 'decoder', encdec[0].tokenizer.model_path)
  return encdec, decoder


def test_two_families_score_the_same_examples_and_tokens(runs):
  (enc_run, enc_params), (dec_run, dec_params) = runs
  enc, dec = scoring.score(enc_run, enc_params), scoring.score(dec_run, dec_params)
  assert [r['id'] for r in enc] == [r['id'] for r in dec] == [f'ex{k}' for k in range(10)]
  assert [r['tokens'] for r in enc] == [r['tokens'] for r in dec]
  # some targets are cut to T - 1 tokens + EOS, the same cut for both families
  assert max(r['tokens'] for r in enc) == T and min(r['tokens'] for r in enc) < T
  for records in (enc, dec):
    assert all(np.isfinite(r['loss']) and r['loss'] > 0 for r in records)
    assert all('prediction' in r and 'reference' in r for r in records)
  summary = scoring.summary(enc_run, enc)
  assert summary['test/loss'] == pytest.approx(sum(r['loss'] for r in enc) /
                                               sum(r['tokens'] for r in enc))
  assert {'test/bleu', 'test/exact_match'} <= set(summary)


def test_a_row_alone_scores_what_it_scores_in_a_batch(runs):
  """Unpacked rows: an example's loss does not depend on the other examples of its batch."""
  (run, params), _ = runs
  examples = scoring.read_examples(run.config)
  features = [scoring._features(run, raw, i) for i, (_, raw, _) in enumerate(examples)]
  together = scoring.per_example(run, params, features)['loss'][0]
  alone = [scoring.per_example(run, params, [f])['loss'][0][0] for f in features[:3]]
  np.testing.assert_allclose(alone, together[:3], rtol=2e-5)


def test_choices_are_ranked_by_their_summed_loss(files, runs):
  (run, params), _ = runs
  run.config.log.score.choices = files[3]
  try:
    records = scoring.score(run, params)
  finally:
    run.config.log.score.choices = ''
  assert all(r['choice'] in ('alpha beta', 'gamma', 'mu mu mu') for r in records)
  assert all('prediction' not in r for r in records)
  examples = scoring.read_examples(run.config)
  for r, (_, raw, _) in zip(records, examples):
    assert r['correct'] == int(r['choice'] == raw['targets'])
  # the ranking is the argmin of the choices' own losses
  first = [scoring._features(run, {**examples[0][1], 'targets': c}, 0)
           for c in ('alpha beta', 'gamma', 'mu mu mu')]
  losses = scoring.per_example(run, params, first)['loss'][0]
  assert records[0]['choice'] == ('alpha beta', 'gamma', 'mu mu mu')[int(np.argmin(losses))]


def test_bad_score_files_are_refused_in_one_line(files, tmp_path):
  root, train, _, _ = files
  base = {**SMALL, 'objective': 'seq2seq', 'data.source': 'jsonl:' + train}
  with pytest.raises(ConfigError, match=r'`log.score.file=/nowhere.jsonl`: no such file'):
    config_lib.load('configs/t5.py:tiny', {**base, 'log.score.file': '/nowhere.jsonl'})
  with pytest.raises(ConfigError, match=r'`train.eval_steps=0`'):
    config_lib.load('configs/t5.py:tiny', {**base, 'log.score.file': train,
                                           'train.eval_steps': 0})
  no_ids = tmp_path / 'no_ids.jsonl'
  no_ids.write_text(json.dumps(_pair(1)) + '\n')
  config = config_lib.load('configs/t5.py:tiny', {**base, 'log.score.file': str(no_ids)})
  with pytest.raises(ConfigError, match='line 1 has no "id"'):
    scoring.read_examples(config)


def _targets(run, batch):
  """The target text of each row of a seq2seq batch (unpacked: one example a row)."""
  out = []
  for r in range(batch['targets'].shape[0]):
    ids = batch['targets'][r][batch['targets_segment_ids'][r] > 0].tolist()
    if 'targets_prefix' in batch:
      ids = ids[int(batch['targets_prefix'][r].sum()):]
    out.append(run.tokenizer.decode(ids[:-1]))   # without the EOS
  return out


def test_unpacked_fine_tuning_feeds_both_families_the_same_examples(runs):
  """data.pack=False, one batch size and seed: step k of either family reads the same examples
  (an encoder-decoder packs far fewer examples than a decoder into a step otherwise)."""
  (enc_run, _), (dec_run, _) = runs
  enc_run.config.data.pack = dec_run.config.data.pack = False
  enc_it, dec_it = enc_run.pipeline('train').iterator(0), dec_run.pipeline('train').iterator(0)
  for _ in range(3):
    enc, dec = _targets(enc_run, next(enc_it)), _targets(dec_run, next(dec_it))
    assert enc == dec and len(enc) == 4 and len(set(enc)) > 1


def test_a_classification_head_scores_each_example_by_its_argmax(files):
  """A head (objective=classification) scores every test example: `correct` is its argmax
  against the label, the sum equals the batched eval's accuracy count. The objective's
  whole-eval-set arrays (`gathered`: prediction, label, weight) are no per-example metric."""
  root = files[0]
  labelled = [{'id': f'ex{k}', 'text': _pair(k)['inputs'], 'label': k % 3} for k in range(60)]
  train, test = root / 'labelled.jsonl', root / 'labelled_test.jsonl'
  train.write_text(''.join(json.dumps(r) + '\n' for r in labelled[10:]))
  test.write_text(''.join(json.dumps(r) + '\n' for r in labelled[:10]))
  config = config_lib.load('configs/gpt2.py:tiny', {
      **SMALL, 'objective': 'classification', 'data.source': f'jsonl:{train}',
      'data.text_key': 'text', 'data.label_key': 'label', 'model.num_classes': 3, 'data.seq_len': 16,
      'data.pack': False,
      'log.score.file': str(test)})
  run = setup.prepare(config, str(root / 'head'))
  params = run.trainer.init_state()['params']
  records = scoring.score(run, params)
  assert [r['id'] for r in records] == [f'ex{k}' for k in range(10)]
  assert all(r['tokens'] == 1 and r['correct'] in (0, 1) for r in records)
  features = [scoring._features(run, raw, i)
              for i, (_, raw, _) in enumerate(scoring.read_examples(run.config))]
  eval_fn = run.trainer.eval_fn()
  correct = sum(float(eval_fn(params, batch)['accuracy'][0])
                for _, _, batch in scoring._batches(run, features))
  assert sum(r['correct'] for r in records) == correct
