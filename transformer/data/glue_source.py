"""T5's text-to-text view of a GLUE task's examples: `data.text_to_text=<task>`.

  source = TextToText(inner, glue.TASKS['mnli'])
  source.dataset('train', ('inputs', 'targets'))   # {'inputs': b'mnli hypothesis: .. premise: ..',
                                                   #  'targets': b'neutral'}

The inner source (a TFDS GLUE task, or jsonl files of {"text", "text_pair", "label"}) is read
by the roles 'text', 'text_pair' (pair tasks) and 'label' (a class id, or a score for STS-B),
so its own checks (missing fields, labels that are no class id or no number) name its keys,
files and lines; each example becomes T5's strings (data/glue.py: t5_inputs, t5_target) with
TensorFlow ops, so the seq2seq objective reads them like any pair source.
"""

import tensorflow as tf

from transformer.data import pair_view


class TextToText(pair_view.PairView):
  """A source (sources.Source's interface; sources.get_source builds it) whose 'inputs' and
  'targets' are T5's strings of `task`'s examples."""

  def __init__(self, inner, task):
    super().__init__(inner)
    self.task = task
    self.setting = f'`data.text_to_text={task.name}`'
    self.unset = 'leave data.text_to_text empty'

  def inner_roles(self):
    """{role: kind} the inner source is read by."""
    return self.task.kinds

  def dataset(self, split, roles, *, shard=(0, 1), file_seed=None):
    self.require(roles)
    task = self.task
    ds = self.inner.dataset(split, self.inner_roles(), shard=shard, file_seed=file_seed)

    def t5(example):
      named = {task.text: example['text']}
      if task.text_pair:
        named[task.text_pair] = example['text_pair']
      inputs = tf.strings.join([task.name] + [tf.strings.join([f'{key}:', named[key]], ' ')
                                              for key in sorted(named)], ' ')
      label = example['label']
      if task.regression:
        target = tf.strings.as_string(tf.round(tf.cast(label, tf.float32) * 5) / 5, precision=1)
      else:
        target = tf.gather(tf.constant(task.labels), tf.cast(label, tf.int32))
      return {k: v for k, v in (('inputs', inputs), ('targets', target)) if k in roles}
    return ds.map(t5)

  def fingerprint(self):
    return f'{self.inner.fingerprint()}:t5:{self.task.name}'
