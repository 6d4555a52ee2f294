"""Corpus scores of generated text against references, on detokenized strings, 0-100.

  bleu    sacrebleu.corpus_bleu with its defaults (13a tokenization, one reference per output):
          the number the WMT papers report
  rouge1, rouge2, rougeL   rouge-score F-measures (Porter stemming), averaged over examples

`metric_names(setting, source)` resolves `log.decode.metrics`: 'auto' scores BLEU, plus ROUGE
when the data is summarisation-style (SUMMARISATION_SOURCES); or a comma list of METRICS.

GLUE's metrics over a whole eval set (never averaged per batch: F1, Matthews and the
correlations are not means of per-batch values), computed by scikit-learn and scipy, each in its
own range (accuracy and F1 in [0, 1], correlations in [-1, 1]; the GLUE table shows x 100):
  accuracy   sklearn.metrics.accuracy_score
  f1         sklearn.metrics.f1_score (binary, class 1 positive; 0 when nothing is predicted 1)
  mcc        sklearn.metrics.matthews_corrcoef (CoLA)
  pearson, spearman   scipy.stats.pearsonr / spearmanr (STS-B; NaN for a constant prediction
             or fewer than 2 examples)
`classification_names(num_classes)` are those a classification run logs besides its loss and
accuracy; `text_to_text_scores(task, samples)` scores T5's decoded label words (data/glue.py).
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


def classification_names(num_classes):
  """The corpus scores a classification run logs besides loss and accuracy: Pearson and
  Spearman for regression (1 class), F1 and Matthews for 2 classes, Matthews for more."""
  if num_classes == 1:
    return ('pearson', 'spearman')
  return ('f1', 'mcc') if num_classes == 2 else ('mcc',)


def classification_scores(names, predictions, labels):
  """{name: score} of `predictions` against `labels` (1-D arrays over the whole eval set)."""
  import warnings  # pylint: disable=import-outside-toplevel
  from scipy import stats  # pylint: disable=import-outside-toplevel
  from sklearn import metrics as skm  # pylint: disable=import-outside-toplevel
  if not len(labels):
    return {}
  scorers = {
      'accuracy': lambda p, y: skm.accuracy_score(y, p),
      # class 1's F1 (binary F1), also when a decoded T5 label was no label (-1)
      'f1': lambda p, y: skm.f1_score(y, p, labels=[1], average='macro', zero_division=0),
      'mcc': lambda p, y: skm.matthews_corrcoef(y, p),
      'pearson': lambda p, y: stats.pearsonr(p, y).statistic,
      'spearman': lambda p, y: stats.spearmanr(p, y).statistic,
  }
  out = {}
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')   # a constant prediction: NaN correlation, said by the value
    for name in names:
      undefined = name in ('pearson', 'spearman') and len(labels) < 2   # scipy raises there
      out[name] = float('nan') if undefined else float(scorers[name](predictions, labels))
  return out


def text_to_text_scores(task, samples):
  """`task`'s metrics (data/glue.py) of decoded T5 targets against the references, each read
  back as a class id or a number (`glue.class_of`: any other text counts as wrong, -1)."""
  from transformer.data import glue  # pylint: disable=import-outside-toplevel
  predictions = [glue.class_of(task, s['prediction']) for s in samples]
  references = [glue.class_of(task, s['reference']) for s in samples]
  return classification_scores(task.metrics, predictions, references)
