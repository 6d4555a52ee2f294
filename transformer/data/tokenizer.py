"""SentencePiece tokenizer: trained on the train split at first use and cached beside the data.

Ids are fixed so every objective and model can rely on them: the special tokens of the one
registry (special_tokens.py) in its order (pad 0, eos 1, unk 2, bos 3, then the structural
symbols '<mask>', '<sep>', '<cls>' and the 32 span-corruption sentinels
'<extra_id_0>'..'<extra_id_31>'), then the learned pieces. The structural symbols are SentencePiece
control symbols: no text ever encodes to them (the literal text '<mask>' is ordinary pieces), only
code inserts them by id; `decode` shows them by name so samples stay readable. The model
normalizes nothing (identity rule, whitespace kept) and falls back to bytes, so code and text
round-trip exactly. A `data.vocab_size` too small for the characters of the data is a one-line
error naming the smallest size that trains.

Training is deterministic (fixed seed, one thread, input in split order), and the cached file
name carries a hash of everything that shapes the model:
  <data_dir>/tokenizers/<source>_<vocab>_<hash>.model
so a second run (or another host) loads the same vocabulary instead of training again.

A checkpoint travels with its tokenizer: every run keeps its tokenizer beside its checkpoints/
(tokenizer.model, or tokenizer/ for a Hugging Face one, see hf_tokenizer.py), an import-hf output
keeps the checkpoint's own tokenizer files in tokenizer/, and `checkpoint.init_from` uses the one
recorded there; a different `data.tokenizer` is refused unless its vocabulary is identical.
`data.tokenizer` names a SentencePiece .model file or a directory of Hugging Face tokenizer files.
"""

import hashlib
import io
import json
import logging
import os
import re
import shutil

import sentencepiece as spm
import tensorflow_datasets as tfds

from transformer.data import hf_files
from transformer.data import hf_tokenizer
from transformer.data import sources
from transformer.data import special_tokens
from transformer.errors import ConfigError
from transformer.files import atomic_write

log = logging.getLogger(__name__)

_FORMAT_VERSION = 3          # bump when the training recipe below changes (3: control symbols)
_MAX_SENTENCE_CHARS = 4000   # SentencePiece skips longer training sentences; we cut them
_MIN_BYTE_FALLBACK_VOCAB = 512   # byte pieces need 256 ids; smaller vocabularies go without
_SPACE = '\u2581'                # SentencePiece's whitespace mark
_TOO_SMALL = re.compile(r'smaller than required_chars\. \d+ vs (\d+)')


def _min_vocab():
  """The meta and structural pieces of the registry, plus one."""
  return len(special_tokens.meta()) + len(special_tokens.control_pieces()) + 1


class Tokenizer:
  """A loaded SentencePiece model with the ids of the shared contract.

  The contract every tokenizer meets (this one and hf_tokenizer.HFTokenizer): `vocab_size`; the
  id of every special token of the registry as `<name>_id` (pad_id, eos_id, unk_id, bos_id,
  mask_id, sep_id, cls_id; None where it has no such token) and `sentinel_ids`; encode(text)
  without special tokens, encode_batch, decode(ids) stopping at EOS and skipping ids the
  tokenizer lacks, id_to_piece (None for such an id), vocabulary() (every piece by id) and
  save_to(run_dir).
  """

  kind = 'sentencepiece'
  has_pad = True

  def __init__(self, model_path):
    self.model_path = str(model_path)
    with open(self.model_path, 'rb') as f:
      self._proto = f.read()
    self.sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self.vocab_size = self.sp.get_piece_size()
    for token in special_tokens.meta():   # SentencePiece's own: sp.pad_id() ...
      setattr(self, token.attribute, getattr(self.sp, token.attribute)())
    self._named = set()
    for token in special_tokens.structural():
      ids = [self._symbol(piece) for piece in token.pieces()]
      ids = ids if None not in ids else []
      setattr(self, token.attribute, ids if token.kind == 'numbered' else (ids or [None])[0])
      self._named.update(ids)
    if any(not self.sp.is_control(i) for i in self._named):
      log.warning('%s: its <mask>/<sep>/<cls>/<extra_id_N> are not control symbols, so text '
                      'can encode to them; retrain it (leave data.tokenizer empty)', model_path)
    self._dummy_prefix = self.sp.encode('a', out_type=str)[0].startswith(_SPACE)

  def _symbol(self, piece):
    """The id of a user-defined symbol, or None when this model lacks it."""
    i = self.sp.piece_to_id(piece)
    return i if i != self.unk_id and self.sp.id_to_piece(i) == piece else None

  def encode(self, text):
    """str -> list of ids (no BOS/EOS added)."""
    return self.sp.encode(text)

  def encode_batch(self, texts):
    """list of str -> list of lists of ids (one C++ call)."""
    return self.sp.encode(list(texts))

  def decode(self, ids):
    """ids -> str, stopping at the first EOS and dropping padding.

    An id the tokenizer lacks (outside 0..vocab_size - 1: a model may have more rows than its
    tokenizer) is skipped, as transformers' decode skips it.

    Structural symbols (control pieces, which SentencePiece decodes to '') appear by name, e.g.
    'a<extra_id_0> b': removing the names gives exactly the decoded text around them.
    """
    parts, run, text_so_far = [], [], False
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if i in self._named:
        text = self._decode_run(run, after_text=text_so_far)
        parts += [text, self.sp.id_to_piece(i)]
        run, text_so_far = [], text_so_far or bool(text)
      elif i != self.pad_id and 0 <= i < self.vocab_size:
        run.append(i)
    return ''.join(parts) + self._decode_run(run, after_text=text_so_far)

  def _decode_run(self, run, *, after_text):
    """SentencePiece drops the leading space of the text (its dummy prefix): put it back when
    the run continues text that a structural symbol interrupted."""
    text = self.sp.decode(run)
    lost = after_text and self._dummy_prefix and run and self.sp.id_to_piece(run[0])[:1] == _SPACE
    return ' ' + text if lost else text

  def id_to_piece(self, i):
    """The piece of id `i`; None for an id the tokenizer lacks."""
    i = int(i)
    return self.sp.id_to_piece(i) if 0 <= i < self.vocab_size else None

  def vocabulary(self):
    """Every piece, by id (what `data.tokenizer` must match under `init_from`)."""
    return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]

  def byte_lengths(self):
    """(bytes [vocab], leading [vocab]): the UTF-8 bytes each id adds to decoded text and 1
    where decoding drops the piece's dummy-prefix space at the start of a text (bits per byte:
    hf_tokenizer.sentencepiece_byte_lengths)."""
    return hf_tokenizer.sentencepiece_byte_lengths(self.sp)

  def save(self, path):
    """Copy the model file to `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    shutil.copyfile(self.model_path, path)
    return path

  def save_to(self, directory):
    """Store the model as directory/tokenizer.model (the trainer keeps one in every run)."""
    return self.save(os.path.join(directory, RUN_TOKENIZER))

  def __repr__(self):
    return f'Tokenizer({self.model_path!r}, vocab_size={self.vocab_size})'


_LOADED = {}


def load(path):
  """The tokenizer of a SentencePiece .model file or a Hugging Face tokenizer directory,
  loaded once per process."""
  path = os.path.abspath(path)
  if path not in _LOADED:
    _LOADED[path] = (hf_tokenizer.HFTokenizer(path) if os.path.isdir(path) else Tokenizer(path))
  return _LOADED[path]


def _training_roles(source):
  """Text roles to learn the vocabulary from: 'text' if the source has it, and both sides."""
  roles = [r for r in ('text', 'inputs', 'targets') if source.field(r) is not None]
  if not roles:
    source.require(('text',))   # raises a ConfigError naming `data.text_key`
  return tuple(roles)


def _recipe(config, source, roles):
  data = config.data
  recipe = dict(
      version=_FORMAT_VERSION, source=source.fingerprint(), split=data.train_split,
      fields=[source.field(r) for r in roles], vocab_size=int(data.vocab_size),
      examples=int(data.tokenizer_train_examples),
      model_type=data.get('tokenizer_model', 'unigram'))
  added = special_tokens.control_pieces()[special_tokens.ORIGINAL_CONTROL_PIECES:]
  if added:   # tokens registered after format 3: a cached model without them is not reused
    recipe['added_specials'] = added
  return recipe


def cache_path(config, source=None):
  """Where the tokenizer trained for `config` lives (whether or not it exists yet)."""
  source = source or sources.get_source(config)
  roles = _training_roles(source)
  recipe = _recipe(config, source, roles)
  digest = hashlib.sha1(repr(sorted(recipe.items())).encode()).hexdigest()[:10]
  stem = re.sub(r'[^A-Za-z0-9.-]+', '-', source.name.split(':')[0] if
                isinstance(source, sources.LocalSource) else source.name).strip('-')
  return os.path.join(sources.data_dir(config), 'tokenizers',
                      f'{stem}_{recipe["vocab_size"]}_{digest}.model')


def training_texts(config, source, roles):
  """Up to `data.tokenizer_train_examples` examples of the train split, each side a sentence."""
  limit = int(config.data.tokenizer_train_examples)
  ds = source.dataset(config.data.train_split, roles)
  for example in tfds.as_numpy(ds.take(limit)):
    for role in roles:
      text = example[role].decode('utf-8', errors='replace')
      # Long documents become several sentences (SentencePiece drops overlong ones).
      for start in range(0, len(text), _MAX_SENTENCE_CHARS):
        piece = text[start:start + _MAX_SENTENCE_CHARS]
        if piece.strip():
          yield piece


def train(config, source, model_path):
  """Train the SentencePiece model for `config` and write it to `model_path` atomically."""
  roles = _training_roles(source)
  recipe = _recipe(config, source, roles)
  vocab_size, model_type = recipe['vocab_size'], recipe['model_type']
  if model_type not in ('unigram', 'bpe'):
    raise ConfigError(f'`data.tokenizer_model={model_type!r}`: ; use unigram or bpe')
  texts = list(training_texts(config, source, roles))
  if not texts:
    raise ConfigError(f'`data.source={source.name!r}`: the train split has no '
                      f'text to learn a vocabulary from; check the source and its fields')
  print(f'data   training a {vocab_size}-piece {model_type} tokenizer on {len(texts):,} texts of '
        f'{source.name} (first use only)...', flush=True)
  proto = None
  if vocab_size >= _min_vocab():
    try:
      proto = _train_spm(texts, vocab_size, model_type,
                         byte_fallback=vocab_size >= _MIN_BYTE_FALLBACK_VOCAB)
    except RuntimeError as e:
      if not _TOO_SMALL.search(str(e)):
        raise ConfigError(f'`data.vocab_size={vocab_size}`: SentencePiece cannot train on '
                          f'{source.name} ({" ".join(str(e).split())[-200:]})') from None
  if proto is None:   # fewer pieces than the characters of the data (and the meta pieces)
    smallest = _smallest_vocab(texts, model_type)
    raise ConfigError(f'`data.vocab_size={vocab_size}`: too small for the characters of '
                      f'{source.name}; the smallest that works is {smallest}, set '
                      f'--config.data.vocab_size={smallest} or more (e.g. '
                      f'{max(smallest, 2048)})')
  os.makedirs(os.path.dirname(model_path), exist_ok=True)
  with atomic_write(model_path) as tmp, open(tmp, 'wb') as f:   # hosts never see half a file
    f.write(proto)
  return model_path


def _train_spm(texts, vocab_size, model_type, *, byte_fallback):
  """The bytes of a SentencePiece model of `texts` (RuntimeError when SentencePiece refuses)."""
  model = io.BytesIO()
  spm.set_random_generator_seed(0)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model,
      vocab_size=vocab_size, model_type=model_type,
      **{token.attribute: token.sp_id for token in special_tokens.meta()},
      control_symbols=special_tokens.control_pieces(), hard_vocab_limit=False,
      byte_fallback=byte_fallback, character_coverage=0.9995 if byte_fallback else 1.0,
      normalization_rule_name='identity', remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True, split_digits=True,
      max_sentence_length=4 * _MAX_SENTENCE_CHARS, input_sentence_size=0,
      shuffle_input_sentence=False, num_threads=1, minloglevel=2)
  return model.getvalue()


def _smallest_vocab(texts, model_type):
  """The smallest vocab_size that trains on `texts`: the count of required characters and meta
  pieces SentencePiece names when it refuses a minimal vocabulary (a fast refusal, before any
  training), under the recipe (with or without byte pieces) that the found size selects."""
  def required(byte_fallback):
    try:
      _train_spm(texts, _min_vocab(), model_type, byte_fallback=byte_fallback)
    except RuntimeError as e:
      match = _TOO_SMALL.search(str(e))
      if not match:
        raise
      return int(match.group(1))
    return _min_vocab()
  without_bytes = required(False)
  if without_bytes < _MIN_BYTE_FALLBACK_VOCAB:
    return without_bytes
  return max(_MIN_BYTE_FALLBACK_VOCAB, required(True))


RUN_TOKENIZER = 'tokenizer.model'      # beside every run's checkpoints/ (SentencePiece)
RUN_HF_TOKENIZER = hf_files.RUN_HF_TOKENIZER   # ... or this directory (a Hugging Face one)
IMPORT_RECORD = hf_files.IMPORT_RECORD


def recorded_tokenizer(init_from):
  """The tokenizer recorded with the checkpoint `init_from` (a run directory, its checkpoints/,
  or an import-hf output): a .model file or a tokenizer directory; None when nothing is
  recorded there or the import was made with --weights_only."""
  home = os.path.abspath(os.path.expanduser(init_from))
  if os.path.basename(home) == 'checkpoints':
    home = os.path.dirname(home)
  for name in (RUN_TOKENIZER, RUN_HF_TOKENIZER):
    if os.path.exists(os.path.join(home, name)):
      return os.path.join(home, name)
  return None


def _weights_only_import(init_from):
  """The record of an import-hf --weights_only output, or None."""
  home = os.path.abspath(os.path.expanduser(init_from))
  path = os.path.join(home, IMPORT_RECORD)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    info = json.load(f)
  return None if info.get('tokenizer') else info


def _check_same_vocabulary(explicit, given, recorded, recorded_path):
  if given.vocabulary() != recorded.vocabulary():
    raise ConfigError(f'`data.tokenizer={explicit}`: its vocabulary differs from that of '
                      f'{recorded_path}, the tokenizer of checkpoint.init_from; leave '
                      'data.tokenizer empty to use that one')


def get_tokenizer(config, roles=()):
  """The tokenizer for `config`: with `checkpoint.init_from`, the one recorded with that
  checkpoint (a different `data.tokenizer` is refused unless its vocabulary is identical); else
  `data.tokenizer` if set, else the cached or newly trained one. Before training one, the source
  must have the `roles` the objective reads (`Source.require`: fields, jsonl labels)."""
  explicit = config.data.tokenizer
  init_from = config.checkpoint.init_from
  if init_from:
    recorded = recorded_tokenizer(init_from)
    if recorded and explicit:
      _check_same_vocabulary(explicit, load_explicit(explicit), load(recorded), recorded)
    if recorded:
      return load(recorded)
    if not explicit:
      info = _weights_only_import(init_from)
      if info:
        raise ConfigError(f'`checkpoint.init_from={init_from}`: imported with --weights_only '
                          f'(no tokenizer), so its {info.get("vocab_size", "?")}-row embedding '
                          'has no known token ids; re-import it with its tokenizer files, or '
                          'give them as --config.data.tokenizer=DIR')
      raise ConfigError(f'`checkpoint.init_from={init_from}`: no {RUN_TOKENIZER} recorded '
                        'beside it, so its token ids are unknown; give the tokenizer it was '
                        'trained with as --config.data.tokenizer=PATH')
  if explicit:
    return load_explicit(explicit)
  source = sources.get_source(config)
  source.require([role for role in roles if role in sources.ROLES])
  path = cache_path(config, source)
  if not os.path.isfile(path):
    train(config, source, path)
  return load(path)


def load_explicit(explicit):
  """`data.tokenizer`: a SentencePiece .model file or a Hugging Face tokenizer directory."""
  path = os.path.expanduser(explicit)
  if os.path.basename(path) == hf_files.TOKENIZER_JSON and os.path.isfile(path):
    path = os.path.dirname(path) or '.'
  if not os.path.exists(path):
    raise ConfigError(f'`data.tokenizer={explicit!r}`: no such file; give a '
                      f'SentencePiece .model path, a directory of Hugging Face tokenizer files, '
                      f'or leave it empty to train one')
  try:
    return load(path)
  except (OSError, RuntimeError) as e:
    raise ConfigError(f'`data.tokenizer={explicit!r}`: not a SentencePiece '
                      f'model ({str(e).splitlines()[0] if str(e) else e!r})') from None
