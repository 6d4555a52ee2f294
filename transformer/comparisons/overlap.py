"""How much of a task's test text a model could have read before it is scored: whitespace-token
n-gram overlap with the pretraining text and with the tokenizer's training text.

A text overlaps a corpus when one of its n-grams (NGRAM = 8 tokens; the whole text when it has
fewer) occurs in one of the corpus's texts, token for token (split on whitespace, so line breaks
and indentation do not matter). This is the test the comparison's decontamination drops test
examples by (comparisons/corpora.py) and the one `overlap_report` measures after it, so the
report's n-gram shares are 0 by construction; the exact-substring count of targets in the
pretraining text is a second look (a short German target can sit inside an English word).

The corpora are streamed once per call against a table of the wanted n-grams, so the memory is
the test texts' n-grams, not the corpus's. A TFDS pretraining corpus (c4 at the small and base
scales) is not scanned (too large): its figures are None and the report names it as unscanned;
the tasks' test text (standard-library docstrings and code, gettext catalogs) is not expected
in it, which nothing here measured.
"""

NGRAM = 8


def grams(text, n=NGRAM):
  """(k, the set of k-token tuples of `text`) with k = min(n, its tokens); (0, set()) if empty."""
  tokens = text.split()
  k = min(n, len(tokens))
  return k, {tuple(tokens[i:i + k]) for i in range(len(tokens) - k + 1)} if k else set()


def overlapping(texts, corpus, n=NGRAM):
  """The indices of `texts` that share an n-gram (`grams`) with some text of `corpus`."""
  wanted = {}
  for index, text in enumerate(texts):
    k, found = grams(text, n)
    for gram in found:
      wanted.setdefault(k, {}).setdefault(gram, []).append(index)
  hits = set()
  for text in corpus:
    tokens = text.split()
    for k, table in wanted.items():
      for i in range(len(tokens) - k + 1):
        indices = table.get(tuple(tokens[i:i + k]))
        if indices:
          hits.update(indices)
  return hits


def _fields(records):
  """(targets, inputs) of test records: generation {'inputs', 'targets'}; classification
  {'text', 'name'} has inputs only (its target is a class name, in any text by design)."""
  targets = [r['targets'] for r in records if 'targets' in r]
  inputs = [r['inputs'] if 'inputs' in r else r['text'] for r in records]
  return targets, inputs


def overlap_report(tests, pretrain_texts, tokenizer_texts, dropped=None, n=NGRAM,
                   corpus='embedded'):
  """{task: {test_examples, dropped, targets_/inputs_ngram_pretrain|tokenizer (shares of the
  test set), targets_substring_pretrain (count), pretrain_corpus, pretrain_scanned}} for
  `tests` {task: records}: after the comparison's decontamination every share is 0. A share is
  None where a task has no such field (classification: no target text), and every pretraining
  figure is None when `pretrain_texts` is None (the pretraining `corpus` was not scanned)."""
  scanned = pretrain_texts is not None
  pretrain_texts, tokenizer_texts = list(pretrain_texts or ()), list(tokenizer_texts)
  every, spans = [], {}
  for task, records in tests.items():
    for field, texts in zip(('targets', 'inputs'), _fields(records)):
      spans[(task, field)] = (len(every), len(every) + len(texts))
      every += texts
  hits = {'pretrain': overlapping(every, pretrain_texts, n),
          'tokenizer': overlapping(every, tokenizer_texts, n)}
  joined = '\n'.join(pretrain_texts)
  report = {}
  for task, records in tests.items():
    row = {'test_examples': len(records), 'dropped': (dropped or {}).get(task),
           'pretrain_corpus': corpus, 'pretrain_scanned': scanned}
    for field in ('targets', 'inputs'):
      start, end = spans[(task, field)]
      for name, found in hits.items():
        count = sum(start <= i < end for i in found)
        measured = end > start and (scanned or name != 'pretrain')
        row[f'{field}_ngram_{name}'] = count / (end - start) if measured else None
    targets = every[slice(*spans[(task, 'targets')])]
    row['targets_substring_pretrain'] = (sum(t in joined for t in targets)
                                         if targets and scanned else None)
    report[task] = row
  return report


def report_markdown(report, n=NGRAM):
  """A short table of `overlap_report`'s figures."""
  def share(value):
    return '-' if value is None else f'{100 * value:.1f}%'
  unscanned = sorted({row['pretrain_corpus'] for row in report.values()
                      if not row.get('pretrain_scanned', True)})
  lines = [f'# Test-set overlap ({n}-gram, whitespace tokens)', '',
           'Test examples come from held-out module files (translation: held-out messages); '
           'those sharing an n-gram with the pretraining or tokenizer text were dropped.', '']
  if unscanned:
    lines += [f'Pretraining reads the TFDS corpus {", ".join(unscanned)}, which was NOT scanned '
              '(too large): its columns read "-" (not measured). The tokenizer text (the '
              'embedded corpus and task training text) was. The test data (standard-library '
              'docstrings and code, gettext catalogs) are not expected in it; unmeasured.', '']
  lines += ['| task | test | dropped | target n-gram pretrain / tokenizer | '
            'input n-gram pretrain / tokenizer | targets verbatim in pretraining |',
            '|---|---|---|---|---|---|']
  for task, row in sorted(report.items()):
    substring = row['targets_substring_pretrain']
    lines.append(
        f'| {task} | {row["test_examples"]} | {row["dropped"]} | '
        f'{share(row["targets_ngram_pretrain"])} / {share(row["targets_ngram_tokenizer"])} | '
        f'{share(row["inputs_ngram_pretrain"])} / {share(row["inputs_ngram_tokenizer"])} | '
        f'{"-" if substring is None else substring} |')
  return '\n'.join(lines) + '\n'
