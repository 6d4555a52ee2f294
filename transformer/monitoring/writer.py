"""TensorBoard logging: the tag contract and one writer per run directory (events.py reads them back).

Every family writes the same tags (`TAGS`), so `tensorboard --logdir <workdir>/<experiment>`
overlays any two runs. All summaries of a run, the HParams dashboard included, go into the run
directory itself (no timestamped sub-runs), which is what makes the overlay line up.
"""

import itertools
import logging
import math
import os
import time
from typing import Any, Mapping

import numpy as np

from transformer.monitoring import attention_plot, stability

log = logging.getLogger(__name__)

# The tag contract every family writes. Trainers may add more (e.g. 'eval/bleu'), never rename these.
TAGS = (
    'train/loss', 'train/accuracy', 'train/perplexity', 'train/learning_rate', 'train/grad_norm',
    'eval/loss', 'eval/accuracy', 'eval/perplexity',
    'perf/tokens_per_sec', 'perf/steps_per_sec', 'perf/mfu', 'perf/tflops_per_device',
    'perf/compile_seconds', 'perf/packing_efficiency',
    'params/total', 'params/non_embedding',
    'train/tokens_seen',
)
OPTIONAL_TAGS = ('eval/bleu', 'eval/rouge1', 'eval/rouge2', 'eval/rougeL',  # seq2seq decoding
                 'eval/bits_per_byte', 'train/bits_per_byte',   # language-model objectives
                 # GLUE's corpus-level metrics (classification, T5 text-to-text; higher is better)
                 'eval/f1', 'eval/mcc', 'eval/pearson', 'eval/spearman')


def flatten_config(config) -> dict[str, Any]:
  """A ConfigDict or nested dict as {'model.num_layers': 2, ...} of HParams-friendly scalars.

  bool/int/float/str stay as they are; tuples, lists, None and anything else become strings.
  """
  if hasattr(config, 'to_dict'):
    config = config.to_dict()
  out = {}

  def visit(prefix, node):
    if isinstance(node, Mapping):
      for k, v in node.items():
        visit(f'{prefix}{k}.', v)
      return
    key = prefix[:-1]
    if isinstance(node, (bool, int, float, str)):
      out[key] = node
    elif isinstance(node, np.generic):
      out[key] = node.item()
    else:
      out[key] = str(node)

  visit('', config)
  return out


def _mark_differing(experiment_summary, first):
  """Put the hparams named in `first` first and mark them `differs` (TensorBoard lists the
  hparams that differ between runs first); edits the tensorboardX experiment summary."""
  if not first:
    return
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  metadata = experiment_summary.value[0].metadata
  data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
  rank = {name: i for i, name in enumerate(first)}
  infos = sorted(data.experiment.hparam_infos, key=lambda h: rank.get(h.name, len(rank)))
  for info in infos:
    info.differs = info.name in rank
  del data.experiment.hparam_infos[:]
  data.experiment.hparam_infos.extend(infos)
  metadata.plugin_data.content = data.SerializeToString()


def layer_groups(config):
  """{name prefix: layers} of the attention layers (names as in monitoring/attention.py)."""
  model = config.model
  if model.family != 'encoder_decoder':
    return {'': model.num_layers}
  decoder = model.num_decoder_layers or model.num_layers
  return {'encoder/': model.num_layers, 'decoder/': decoder, 'cross/': decoder}


def _chart(*tags):
  return ['Multiline', [f'^{t}$' for t in tags]]


def scalars_layout(config):
  """The custom-scalars layout: train and eval loss one chart each (every run of the experiment
  on it), the eval metrics, the perf panel (tokens/s, MFU, packing efficiency), the router
  statistics of a mixture-of-experts model and, with
  `log.attention_stats`, attention entropy and distance per layer and per head; with
  `log.stability`, one chart per stability statistic, a line per layer (monitoring/stability.py)."""
  layout = {
      'loss': {'train/loss': _chart('train/loss'), 'eval/loss': _chart('eval/loss')},
      'eval': {'eval/accuracy': _chart('eval/accuracy'),
               'eval/perplexity': _chart('eval/perplexity')},
      'perf': {'tokens/s': _chart('perf/tokens_per_sec'), 'MFU': _chart('perf/mfu'),
               'packing efficiency': _chart('perf/packing_efficiency')},
  }
  if config.objective == 'seq2seq':
    layout['eval']['eval/bleu, eval/rouge'] = _chart(r'eval/(bleu|rouge.*)')
  if config.model.get('moe_experts'):   # router statistics (models/moe.py)
    layout['moe'] = {'router losses': _chart('train/moe/aux_loss', 'train/moe/z_loss'),
                     'load (x uniform), dropped share': _chart(
                         'train/moe/max_load', 'train/moe/min_load', 'train/moe/dropped'),
                     'load per expert': _chart(r'train/moe/load/.*')}
  if config.log.get('stability', False):
    layout['stability'] = stability.layout()
  if not config.log.attention_stats:
    return layout
  groups = layer_groups(config)
  per_layer, per_head = {}, {}
  for prefix, layers in groups.items():
    what = f' ({prefix[:-1]})' if prefix else ''
    for key in ('entropy', 'distance'):
      per_layer[f'{key} per layer{what}'] = _chart(rf'attention/{key}/{prefix}layer\d+')
      per_head.update({f'{key} {prefix}layer{i} per head': _chart(
          rf'attention_heads/{key}/{prefix}layer{i}/head\d+') for i in range(layers)})
  per_layer['near-uniform / near-one-hot heads'] = _chart('attention/uniform_heads',
                                                          'attention/one_hot_heads')
  return {**layout, 'attention': per_layer, 'attention heads': per_head}


def _to_uint8_image(array) -> np.ndarray:
  """HxW or HxWxC (C in 1, 3, 4), floats in [0, 1] or uint8 -> uint8 HxWxC."""
  x = np.asarray(array)
  if x.ndim == 2:
    x = x[:, :, None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
    raise ValueError(f'image must be HxW or HxWxC with C in (1, 3, 4), got shape {x.shape}')
  if x.dtype != np.uint8:
    x = np.round(np.clip(np.nan_to_num(x.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
  return x


_SERIAL = itertools.count()


class MetricWriter:
  """Writes the run's TensorBoard events; `enabled=False` (processes other than 0) writes nothing.

  The summaries are tensorboardX's; the events go through its synchronous `EventsWriter`, not
  `SummaryWriter`, whose writer thread holds queued events that its `flush()` leaves behind: a
  run killed after a checkpoint lost the points logged just before it. Here `flush()` returns
  once everything written is on disk, and a flush happens at least every `flush_secs`.
  """

  def __init__(self, logdir, *, enabled=True, flush_secs=30):
    self.logdir = os.fspath(logdir)
    self.enabled = enabled
    self._events = None
    self._written = set()    # scalar tags written so far
    self._last_step = 0
    self._flush_secs = flush_secs
    self._flushed_at = time.monotonic()
    if enabled:   # tensorboardX takes ~1 s to import: only a writing process pays for it
      # pylint: disable=g-import-not-at-top
      from tensorboardX import event_file_writer, summary
      from tensorboardX.proto import event_pb2
      self._summary, self._event = summary, event_pb2.Event
      os.makedirs(self.logdir, exist_ok=True)
      # The file is named by the second it opens in; pid and serial keep two writers of one
      # second (a resume, a sweep's trials) from truncating each other's file.
      self._events = event_file_writer.EventsWriter(
          os.path.join(self.logdir, 'events'), filename_suffix=f'.{os.getpid()}.{next(_SERIAL)}')

  def _write(self, summary, step=0):
    self._events.write_event(self._event(summary=summary, step=int(step), wall_time=time.time()))
    if time.monotonic() - self._flushed_at > self._flush_secs:
      self.flush()

  def scalars(self, step, values: Mapping[str, float]):
    """One point per tag at `step`; non-finite values are written too (they show a divergence)."""
    if not self.enabled:
      return
    step = int(step)
    self._last_step = max(self._last_step, step)
    for tag, value in values.items():
      self._write(self._summary.scalar(tag, float(value)), step)
      self._written.add(tag)

  def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any], *, first=()):
    """The HParams dashboard entry of this run, written into the run directory itself.

    `metrics` names the metric columns (scalar tags such as 'eval/loss'); the dashboard shows the
    latest value of each of those scalars. A metric value that is a finite number and whose tag
    has not been written by `scalars` is written as a scalar at the latest step; None or NaN are
    placeholders (use them at the start of training). The keys in `first` (a sweep's swept
    keys) are marked as the ones that differ between runs, which TensorBoard lists first.
    """
    if not self.enabled:
      return
    clean = {}
    for k, v in hparams.items():
      if isinstance(v, np.generic):
        v = v.item()
      clean[k] = v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
    experiment, start, end = self._summary.hparams(clean, dict(metrics))
    _mark_differing(experiment, first)
    for summary in (experiment, start, end):
      self._write(summary)
    finals = {tag: v for tag, v in metrics.items()
              if v is not None and tag not in self._written and math.isfinite(float(v))}
    if finals:
      self.scalars(self._last_step, finals)

  def text(self, step, tag, markdown: str):
    if self.enabled:
      self._write(self._summary.text(tag, markdown), step)

  def image(self, step, tag, array):
    """An HxW or HxWxC image, floats in [0, 1] or uint8."""
    if self.enabled:
      self._write(self._summary.image(tag, _to_uint8_image(array), dataformats='HWC'), step)

  def attention_images(self, step, name, weights_NQK, labels_q=None, labels_k=None,
                       subtitles=None, vmax=None):
    """One picture per head of one layer's weights [heads, Lq, Lk] for one example, at
    `attention_maps/<name>/head<h>` (`name` as in monitoring/attention.py, e.g. 'layer0');
    `subtitles` and `vmax` (the top of the colour scale) per head."""
    if not self.enabled:
      return
    heads = len(weights_NQK)
    pictures = attention_plot.render_heads(
        weights_NQK, labels_q, labels_k, titles=[f'{name} head {h}' for h in range(heads)],
        subtitles=subtitles or (), vmax=vmax)
    for h, picture in enumerate(pictures):
      self.image(step, f'attention_maps/{name}/head{h}', picture)

  def layout(self, layout):
    """The custom-scalars layout of this run (`scalars_layout`); TensorBoard merges every
    run's by category and chart."""
    if self.enabled:
      self._write(self._summary.custom_scalars(layout))

  def flush(self):
    """Returns once every event written so far is on disk."""
    if self.enabled:
      self._events.flush()
      self._flushed_at = time.monotonic()

  def close(self):
    if self.enabled and self._events is not None:
      self._events.close()
      self._events = None
      self.enabled = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
