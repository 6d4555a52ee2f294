"""Data: TFDS sources (our embedded corpora, local files) -> a tokenizer (SentencePiece or a
Hugging Face checkpoint's, one interface) -> packed numpy batches.

  tokenizer = transformer.data.get_tokenizer(config)
  pipeline = transformer.data.Pipeline(config, objective, tokenizer, split='train')
  it = pipeline.iterator(position)       # next(it) -> batch dict; it.state -> resume position

Importing this package registers the `python_stdlib` and `gettext_catalogs` TFDS builders.
"""

from transformer.data import gettext_corpus
from transformer.data import stdlib_corpus
from transformer.data.packing import BatchBuilder
from transformer.data.pipeline import DataIterator
from transformer.data.pipeline import Pipeline
from transformer.data.hf_tokenizer import HFTokenizer
from transformer.data.sources import data_dir
from transformer.data.sources import get_source
from transformer.data.tokenizer import get_tokenizer
from transformer.data.tokenizer import Tokenizer

__all__ = ['BatchBuilder', 'DataIterator', 'HFTokenizer', 'Pipeline', 'Tokenizer', 'data_dir',
           'get_source', 'get_tokenizer', 'gettext_corpus', 'stdlib_corpus']
