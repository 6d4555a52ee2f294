"""The tokenizer of a Hugging Face checkpoint directory, checked against its embedding table.

  tok = read_tokenizer('/path/to/hf_dir', vocab_size=config.model.vocab_size)

The files are read as transformers.AutoTokenizer reads them (transformer/data/hf_files.py);
config.json supplies the pad/bos/eos ids and the tokenizer class its files leave unnamed. Every
id must have a row in the embedding (tokenizers may be smaller than it: T5's 32100 tokens in
32128 rows, never larger).
"""

import os

from transformer.data import hf_files
from transformer.data.hf_tokenizer import HFTokenizer
from transformer.errors import ConfigError
from transformer.hf import reader


def read_tokenizer(path, vocab_size):
  """The HFTokenizer of checkpoint directory `path` whose model has `vocab_size` embedding rows."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  tok = HFTokenizer(path, model_config=reader.read_config(path))
  if tok.vocab_size > vocab_size:
    name = hf_files.backend_files(path)[1]
    raise ConfigError(f'{os.path.join(path, name)}: {tok.vocab_size} tokens, more than the '
                      f'{vocab_size} rows of the embedding (config.json "vocab_size"); this '
                      'tokenizer is not the checkpoint\'s')
  return tok
