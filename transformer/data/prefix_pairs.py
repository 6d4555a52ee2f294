"""(prefix, continuation) pairs of a text source: `data.prefix_pairs=True`.

  source = PrefixPairs(inner)            # inner: any source with a 'text' field (TFDS, jsonl:)
  source.dataset('train', ('inputs', 'targets'))   # {'inputs': prefix, 'targets': continuation}

T5's prefix LM (Raffel et al. 2020, sec. 3.3.1) read as seq2seq: each text is cut once, at a word
boundary a stable-random fraction LOW..HIGH of the way in (the fraction is a hash of the text,
`stdlib_corpus.stable_hash`, so every run, process and family cuts a document at the same
place); the prefix keeps its last MAX_CHARS characters (the encoder's truncation keeps the start,
so it never separates the prefix from the continuation). `split` is the one rule: a comparison's
encoder-decoder and decoder-only LM cells read the same pairs of the same documents through it,
from a `jsonl:` file or a TFDS corpus alike, one example per text (the cardinality of the inner
source is kept, so a TFDS corpus is never counted). A text with no space at or after the cut
point is cut at its last space before it; one with no space at all is all continuation.
"""

import tensorflow as tf

from transformer.data import pair_view, stdlib_corpus

LOW, HIGH = 0.5, 0.85        # where the cut falls, as a fraction of the text's characters
MAX_CHARS = 320              # a prefix's last characters kept: ~128 tokens at 2.5 a token


def split(text, low=LOW, high=HIGH, max_chars=MAX_CHARS):
  """(prefix, continuation) of `text` (see the module docstring); the space between them is
  dropped."""
  cut = int(len(text) * (low + (high - low) * stdlib_corpus.stable_hash(text) / 2 ** 32))
  space = text.find(' ', cut)
  if not 0 < space < len(text) - 1:
    space = text.rfind(' ', 0, cut)
  if space <= 0:
    return '', text
  start = text.find(' ', space - max_chars) + 1 if space > max_chars else 0
  return text[start:space], text[space + 1:]


class PrefixPairs(pair_view.PairView):
  """A source (sources.Source's interface; sources.get_source builds it) whose 'inputs' and
  'targets' are `split` of the inner source's 'text' (`data.text_key`)."""

  setting, unset = '`data.prefix_pairs=True`', 'set data.prefix_pairs=False'

  def inner_roles(self):
    return ('text',)

  def dataset(self, split_name, roles, *, shard=(0, 1), file_seed=None):
    self.require(roles)
    ds = self.inner.dataset(split_name, ('text',), shard=shard, file_seed=file_seed)

    def pair(text):
      prefix, continuation = split(text.numpy().decode('utf-8'))
      return prefix.encode('utf-8'), continuation.encode('utf-8')

    def to_pair(example):
      inputs, targets = tf.py_function(pair, [example['text']], [tf.string, tf.string])
      inputs.set_shape([])
      targets.set_shape([])
      return {k: v for k, v in (('inputs', inputs), ('targets', targets)) if k in roles}
    return ds.map(to_pair)

  def fingerprint(self):
    return f'{self.inner.fingerprint()}:prefix_pairs:{LOW}-{HIGH}-{MAX_CHARS}'
