"""Data: TFDS sources (our embedded corpora, local files) -> a tokenizer (SentencePiece or a
Hugging Face checkpoint's, one interface) -> packed numpy batches.

  tokenizer = transformer.data.get_tokenizer(config)
  pipeline = transformer.data.Pipeline(config, objective, tokenizer, split='train')
  it = pipeline.iterator(position)       # next(it) -> batch dict; it.state -> resume position

Members load on first use (`transformer.data.get_tokenizer`, `from transformer.data import
Pipeline`), so reading a Hugging Face tokenizer (hf_files, hf_tokenizer) does not import
TensorFlow. Every source goes through sources.py, whose import registers the `python_stdlib` and
`gettext_catalogs` TFDS builders.
"""

import importlib

_MEMBERS = {'BatchBuilder': 'packing', 'DataIterator': 'pipeline', 'Pipeline': 'pipeline',
            'HFTokenizer': 'hf_tokenizer', 'data_dir': 'sources', 'get_source': 'sources',
            'get_tokenizer': 'tokenizer', 'Tokenizer': 'tokenizer'}
__all__ = sorted(_MEMBERS) + ['gettext_corpus', 'stdlib_corpus']


def __getattr__(name):
  """A member (from its module) or a submodule, imported when first asked for."""
  try:
    module = importlib.import_module(f'{__name__}.{_MEMBERS.get(name, name)}')
  except ModuleNotFoundError:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}') from None
  value = getattr(module, name) if name in _MEMBERS else module
  globals()[name] = value
  return value
