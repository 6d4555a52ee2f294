"""The comparison's corpora (transformer/comparisons/corpora.py, overlap.py): split by module file
so that no test example is in the pretraining text or the tokenizer's text, the overlap report,
stable files, the environment manifest and the epochs warning. A few dozen real standard-library
modules (and three gettext catalogs where the machine has them) keep each test to seconds."""

import collections
import filecmp
import json
import os

import pytest

from transformer import config as config_lib
from transformer.comparisons import corpora
from transformer.comparisons import overlap
from transformer.comparisons import plan as plan_lib
from transformer.comparisons import tasks as compare_tasks
from transformer.comparisons.tasks import classification, generation
from transformer.data import gettext_corpus, sources, stdlib_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ('email', 'json', 'http', 'urllib', 'logging', 'concurrent')
CATALOGS = gettext_corpus.catalog_paths()[:3]
TASKS = {'docstring': generation('python_stdlib/docstrings', eval_examples=64),
         'package': classification(classes=4, per_class=60, eval_examples=40),
         'translate': generation('gettext_catalogs/en_de', eval_examples=64)}


def _files():
  """The modules of a few packages and a dozen top-level modules."""
  files = list(stdlib_corpus.stdlib_files())
  packaged = [f for f in files if f[0].split(os.sep)[0] in PACKAGES]
  top = [f for f in files if os.sep not in f[0]][:12]
  return packaged + top


@pytest.fixture(scope='module')
def files():
  return _files()


@pytest.fixture(scope='module')
def prepared(tmp_path_factory, files):
  exp_dir = str(tmp_path_factory.mktemp('exp'))
  corpora.prepare(exp_dir, TASKS, files=files, catalogs=CATALOGS)
  return exp_dir


def _read(exp_dir, rel):
  return corpora.read_jsonl(corpora.data_path(exp_dir, rel))


def _tokenizer_lines(exp_dir):
  with open(corpora.tokenizer_file(exp_dir), encoding='utf-8') as f:
    return f.read().splitlines()


def _all_grams(texts, n):
  found = set()
  for text in texts:
    tokens = text.split()
    found.update(tuple(tokens[i:i + k]) for k in range(1, n + 1)
                 for i in range(len(tokens) - k + 1))
  return found


def test_no_test_example_shares_an_8gram_with_the_pretraining_or_tokenizer_text(prepared):
  """Checked independently of overlap.py: every n-gram of both corpora up to 8 tokens in a set."""
  names = [name for name in TASKS
           if os.path.exists(compare_tasks.task_file(prepared, name, 'test'))]
  assert {'docstring', 'package'} <= set(names)
  pretrain = [r['text'] for r in _read(prepared, 'pretrain.jsonl')]
  corpus = _all_grams(pretrain + _tokenizer_lines(prepared), 8)
  for name in names:
    test = _read(prepared, f'{name}/test.jsonl')
    assert test, name
    for record in test:
      for field in ('inputs', 'targets', 'text'):
        if field in record:
          k, grams = overlap.grams(record[field])
          assert not grams & corpus, (name, record['id'], field)
  with open(corpora.data_path(prepared, 'overlap.json'), encoding='utf-8') as f:
    report = json.load(f)
  for name in names:
    row = report[name]
    assert row['test_examples'] == len(_read(prepared, f'{name}/test.jsonl'))
    assert row['dropped'] >= 0
    shares = [v for key, v in row.items() if '_ngram_' in key and v is not None]
    assert shares and all(v == 0 for v in shares), (name, row)
  assert report['docstring']['targets_substring_pretrain'] == 0
  assert '| docstring |' in open(corpora.data_path(prepared, 'overlap.md')).read()


def test_the_old_corpus_was_contaminated_and_the_report_says_so(files):
  """Today's way (the whole stdlib's docstrings pretrain, the docstrings validation split is
  scored) puts most validation targets in the pretraining text; the new split none."""
  pretrain_all = [t for _, t in stdlib_corpus.text_examples(files)]
  pairs = list(stdlib_corpus.docstring_pairs(files))
  chosen = stdlib_corpus.validation_ids(i for i, _, _ in pairs)
  old_test = [{'id': i, 'inputs': x, 'targets': y} for i, x, y in pairs if i in chosen]
  old = corpora.overlap_report({'docstring': old_test}, pretrain_all, [])['docstring']
  assert old['targets_ngram_pretrain'] > 0.5 and old['targets_substring_pretrain'] > 0
  held = corpora.heldout_groups(files)
  _, candidates = corpora.docstring_split(files, held)
  pretrain = [r['text'] for r in corpora.pretrain_records(files, held)]
  clean = corpora.overlap_report({'docstring': candidates}, pretrain, [])['docstring']
  assert clean['targets_ngram_pretrain'] < old['targets_ngram_pretrain'] / 2


def test_heldout_module_files_are_absent_from_pretraining_and_training(prepared, files):
  with open(corpora.manifest_file(prepared), encoding='utf-8') as f:
    manifest = json.load(f)
  held = set(manifest['heldout_groups'])
  groups = {rel.replace(os.sep, '/') for rel, _ in files}
  assert held and held < groups and len(held) < 0.4 * len(groups)
  pretrain = _read(prepared, 'pretrain.jsonl')
  assert not {corpora.group_of(r['id']) for r in pretrain} & held
  assert any(r['id'].startswith('topic:') for r in pretrain)   # the language reference stays
  for name in ('docstring', 'package'):
    assert {corpora.group_of(r['id']) for r in _read(prepared, f'{name}/test.jsonl')} <= held
    assert not {corpora.group_of(r['id']) for r in _read(prepared, f'{name}/train.jsonl')} & held
  # the split is by module file, not package: some package has files on both sides
  packages = collections.defaultdict(set)
  for group in groups:
    packages[corpora.package_of(group)].add(group in held)
  assert any(sides == {True, False} for package, sides in packages.items() if package)


def test_package_classification_has_every_class_in_train_and_test(prepared):
  with open(compare_tasks.labels_file(prepared, 'package'), encoding='utf-8') as f:
    labels = json.load(f)
  assert len(labels) == 4
  for split in ('train', 'test'):
    records = _read(prepared, f'package/{split}.jsonl')
    assert {(r['label'], r['name']) for r in records} == set(enumerate(labels)), split
    assert all(set(r) == {'id', 'text', 'label', 'name'} for r in records)
  assert len(_read(prepared, 'package/test.jsonl')) == 40


def test_files_are_the_same_bytes_on_a_second_call(prepared, files, tmp_path):
  corpora.prepare(str(tmp_path), TASKS, files=files, catalogs=CATALOGS)
  with open(corpora.manifest_file(prepared), encoding='utf-8') as f:
    manifest = json.load(f)
  assert {'python_version', 'sys_version', 'stdlib_path', 'stdlib_files',
          'gettext_catalogs', 'sha256'} <= set(manifest)
  assert manifest['stdlib_files'] == len(files)
  assert manifest['gettext_catalogs'] == [os.path.basename(p) for p in CATALOGS]
  assert {'pretrain.jsonl', 'tokenizer_text.txt', 'docstring/test.jsonl', 'package/labels.json',
          'overlap.json'} <= set(manifest['sha256'])
  for rel in list(manifest['sha256']) + ['manifest.json']:
    assert filecmp.cmp(corpora.data_path(prepared, rel), corpora.data_path(str(tmp_path), rel),
                       shallow=False), rel


@pytest.mark.skipif(not CATALOGS, reason='no German gettext catalogs on this machine')
def test_translate_test_pairs_are_not_in_the_tokenizer_text(prepared):
  test = _read(prepared, 'translate/test.jsonl')
  train = _read(prepared, 'translate/train.jsonl')
  assert len(test) == 64 and len(train) > 3 * len(test)
  assert not {r['inputs'] for r in test} & {r['inputs'] for r in train}   # split by message
  lines = _tokenizer_lines(prepared)
  assert any(r['targets'] in lines for r in train)   # training pairs may be read ...
  text = '\n'.join(lines)
  assert not any(r['targets'] in lines or r['inputs'] in lines for r in test)   # ... test never
  assert sum(r['targets'] in text for r in test) <= 2   # not even as a substring (one word can)


def test_epochs_warning_past_four_passes():
  assert corpora.epochs_warning(4_000, 1_000) is None
  line = corpora.epochs_warning(5_000, 1_000, name='decoder_lm')
  assert line.startswith('[compare] ') and 'decoder_lm' in line and '5.0 epochs' in line


def test_pretraining_reads_the_jsonl_text_whole(prepared, tmp_path):
  """Every cell pretrains on data/pretrain.jsonl (the prefix-LM cells of both families on its
  (prefix, continuation) pairs, data.prefix_pairs); the `jsonl:` source gives back the
  multi-line texts as they were."""
  plan = plan_lib.load(os.path.join(REPO, 'experiments', 'compare_t5_table2.py'), 'tiny', 1,
                       str(tmp_path))
  exp_dir = os.path.abspath(plan.exp_dir)
  for cell, overrides in plan.cells.items():
    assert overrides['data.source'] == 'jsonl:' + corpora.pretrain_file(exp_dir), cell
    assert overrides.get('data.prefix_pairs', False) == (overrides['objective'] == 'seq2seq')
  config = config_lib.load('configs/t5.py:tiny', {
      'data.source': 'jsonl:' + corpora.pretrain_file(prepared), 'data.text_key': 'text'})
  source = sources.get_source(config)
  read = {t.decode() for t in source.dataset('train', ('text',)).map(
      lambda r: r['text']).as_numpy_iterator()}
  written = {r['text'] for r in _read(prepared, 'pretrain.jsonl')}
  assert read <= written and len(read) > 0.9 * len(written)
  assert any('\n' in t for t in read)
