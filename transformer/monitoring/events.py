"""Reading a run's TensorBoard events back (tests, sweep results, comparisons)."""

import os
from typing import Any

_TEXT_SUFFIX = '/text_summary'   # tensorboardX stores add_text(tag) under tag + this


def read_events(logdir) -> dict[str, Any]:
  """Everything one run directory holds, read back with TensorBoard's own event reader.

  Returns a dict with
    'scalars': {tag: [(step, value), ...]}
    'text':    {tag: [(step, str), ...]}   (tags as given to `text`)
    'images':  {tag: [(step, height, width), ...]}
    'hparams': {name: value} from the latest HParams session start ({} if none)
    'hparam_metrics': [metric tags declared for the HParams dashboard]
  Only event files directly in `logdir` are read (checkpoints beside them are ignored).
  """
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top

  acc = event_accumulator.EventAccumulator(
      os.fspath(logdir), size_guidance={event_accumulator.SCALARS: 0,
                                        event_accumulator.IMAGES: 0,
                                        event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = acc.Tags()
  out = {'scalars': {}, 'text': {}, 'images': {}, 'hparams': {}, 'hparam_metrics': []}
  for tag in tags.get('scalars', []):
    out['scalars'][tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
  for tag in tags.get('images', []):
    out['images'][tag] = [(e.step, e.height, e.width) for e in acc.Images(tag)]
  text_tags = set(_plugin_content(acc, 'text'))
  for tag in tags.get('tensors', []):
    if tag in text_tags:
      name = tag[:-len(_TEXT_SUFFIX)] if tag.endswith(_TEXT_SUFFIX) else tag
      out['text'][name] = [(e.step, _tensor_text(e.tensor_proto)) for e in acc.Tensors(tag)]
  for content in _plugin_content(acc, 'hparams').values():
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.HasField('session_start_info'):
      out['hparams'] = {k: _hparam_value(v) for k, v in data.session_start_info.hparams.items()}
    if data.HasField('experiment'):
      out['hparam_metrics'] = [m.name.tag for m in data.experiment.metric_infos]
  return out


def _plugin_content(acc, plugin) -> dict:
  try:
    return acc.PluginTagToContent(plugin)
  except KeyError:   # no summary of that plugin in the run
    return {}


def _tensor_text(tensor_proto) -> str:
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  value = tensor_util.make_ndarray(tensor_proto)
  item = value.reshape(-1)[0] if value.size else b''
  return item.decode('utf-8') if isinstance(item, bytes) else str(item)


def _hparam_value(value):
  kind = value.WhichOneof('kind')
  return getattr(value, kind) if kind else None
