"""Corpus scores of generated text against references, on detokenized strings, 0-100.

  bleu    sacrebleu.corpus_bleu with its defaults (13a tokenization, one reference per output):
          the number the WMT papers report
  rouge1, rouge2, rougeL   rouge-score F-measures (Porter stemming), averaged over examples

`metric_names(setting, source)` resolves `log.decode.metrics`: 'auto' scores BLEU, plus ROUGE
when the data is summarisation-style (SUMMARISATION_SOURCES); or a comma list of METRICS.
"""

METRICS = ('bleu', 'rouge')
ROUGE = ('rouge1', 'rouge2', 'rougeL')
# Sources whose targets summarise their inputs (TFDS names, and code -> docstring).
SUMMARISATION_SOURCES = ('cnn_dailymail', 'xsum', 'gigaword', 'multi_news', 'billsum', 'samsum',
                         'scientific_papers', 'reddit_tifu', 'wikihow', 'newsroom', 'aeslc',
                         'big_patent', 'python_stdlib/docstrings')


def metric_names(setting, source):
  """The score names for `log.decode.metrics=setting` on `data.source=source`."""
  if setting == 'auto':
    chosen = ['bleu'] + (['rouge'] if source.startswith(SUMMARISATION_SOURCES) else [])
  else:
    chosen = [m.strip() for m in setting.split(',') if m.strip()]
  return tuple(name for m in chosen for name in (ROUGE if m == 'rouge' else (m,)))


def bleu(predictions, references):
  """Corpus BLEU (sacrebleu)."""
  import sacrebleu  # pylint: disable=import-outside-toplevel
  return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def rouge(predictions, references):
  """{'rouge1', 'rouge2', 'rougeL'}: mean F-measure x 100 (rouge-score, stemmed)."""
  from rouge_score import rouge_scorer  # pylint: disable=import-outside-toplevel
  scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=True)
  totals = dict.fromkeys(ROUGE, 0.0)
  for prediction, reference in zip(predictions, references):
    for name, value in scorer.score(reference, prediction).items():
      totals[name] += value.fmeasure
  n = max(len(predictions), 1)
  return {name: 100.0 * total / n for name, total in totals.items()}


def score(names, samples):
  """{name: corpus score} of `samples` (dicts with 'prediction' and 'reference') for `names`."""
  if not samples or not names:
    return {}
  predictions = [s['prediction'] for s in samples]
  references = [s['reference'] for s in samples]
  out = {}
  if 'bleu' in names:
    out['bleu'] = bleu(predictions, references)
  if any(name in ROUGE for name in names):
    out.update({k: v for k, v in rouge(predictions, references).items() if k in names})
  return out
