"""A Hugging Face tokenizer behind our tokenizer interface (the contract is in tokenizer.py).

  tok = HFTokenizer(directory)      # a checkpoint's tokenizer files (see hf_files.py)
  tok.encode(text) -> ids           # what transformers.AutoTokenizer gives with
                                    # add_special_tokens=False: the objectives frame the text

Special-token strings inside the text (e.g. '[MASK]', '<extra_id_0>') encode to their ids, as in
transformers. The special tokens are those of the registry (special_tokens.py): the roles the
files name (pad, eos, unk, bos, mask, sep, cls), then every other entry by its piece string, e.g.
the T5 sentinels '<extra_id_N>' (a SentencePiece tokenizer appends them after its pieces,
<extra_id_0> last: counted down from the end of the vocabulary). A role the files leave unnamed
takes its registry partner: eos <-> sep and bos <-> cls, so BERT's [CLS] / [SEP] begin and end a
decoder example and GPT-2's <|endoftext|> is bos, eos, sep and cls at once. A role still missing
is None, and an objective that needs it refuses (objectives/base.py). A tokenizer without a pad
token pads with id 0: padding is marked by segment ids and never read; decode then keeps id 0
(GPT-2's '!'). An id the tokenizer lacks (a model may have more rows than it has ids: T5's
32,128 for 32,100) decodes to nothing and has no token (None), as in transformers.
"""

import os
import re

import numpy as np
import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from transformer.data import hf_files
from transformer.data import special_tokens
from transformer.errors import ConfigError

_BYTE_PIECE = re.compile(r'<0x[0-9A-Fa-f]{2}>')   # byte-fallback pieces: one byte each
_SPACE = '\u2581'                                  # SentencePiece's whitespace mark


def sentencepiece_byte_lengths(sp, size=None):
  """(bytes [size], leading [size]) of a SentencePiece model's ids (bits per byte): the UTF-8
  bytes each piece adds to decoded text ('\u2581' one space byte, a byte piece <0xHH> one,
  control and unknown pieces none), and 1 where the piece starts with the dummy-prefix space
  that decoding drops at the start of a text. Ids from get_piece_size() to `size` (added
  tokens) have none."""
  size = size or sp.get_piece_size()
  lengths, leading = np.zeros(size, np.int32), np.zeros(size, np.int32)
  dummy_prefix = sp.encode('a', out_type=str)[0].startswith(_SPACE)
  for i in range(sp.get_piece_size()):
    if sp.is_control(i) or sp.is_unknown(i):
      continue
    piece = sp.id_to_piece(i)
    lengths[i] = 1 if sp.is_byte(i) else len(piece.replace(_SPACE, ' ').encode('utf-8'))
    leading[i] = int(dummy_prefix and piece.startswith(_SPACE))
  return lengths, leading


class _Tokenizers:
  """A `tokenizers.Tokenizer` (from tokenizer.json, or built from vocabulary files)."""

  def __init__(self, tok):
    self.tok = tok
    tok.no_truncation()   # some tokenizer.json files cut at 512 tokens: the objectives cut here
    tok.no_padding()
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text):
    return self.tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts):
    return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids):
    return self.tok.decode(ids, skip_special_tokens=False)

  def token_to_id(self, token):
    return self.tok.token_to_id(token)

  def id_to_token(self, i):
    return self.tok.id_to_token(int(i))

  def byte_lengths(self):
    """sentencepiece_byte_lengths' tables, from the decoder: a byte-level BPE's token is one
    byte per character; otherwise a token adds the bytes of decode([t, t]) less decode([t]), and
    the decoder drops what decode([t]) lacks of that at the start (Metaspace's space, WordPiece's
    separator). Special added tokens and byte-fallback pieces as in sentencepiece_byte_lengths."""
    lengths = np.zeros(self.vocab_size, np.int32)
    leading = np.zeros(self.vocab_size, np.int32)
    special = {i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}
    byte_level = isinstance(self.tok.decoder, decoders.ByteLevel)
    size = lambda ids: len(self.tok.decode(ids, skip_special_tokens=False).encode('utf-8'))
    for i in range(self.vocab_size):
      token = self.tok.id_to_token(i)
      if i in special or token is None:
        continue
      if byte_level or _BYTE_PIECE.fullmatch(token):
        lengths[i] = len(token) if byte_level else 1
        continue
      lengths[i] = size([i, i]) - size([i])
      leading[i] = max(lengths[i] - size([i]), 0)
    return lengths, leading

  def add_special(self, names):
    known = {t.content for t in self.tok.get_added_tokens_decoder().values()}
    self.tok.add_special_tokens([tokenizers.AddedToken(n, special=True) for n in names
                                 if n not in known])


class _SentencePiece:
  """A SentencePiece model plus the tokens transformers adds to it (T5's <extra_id_N>), matched
  in the text before SentencePiece sees it."""

  def __init__(self, path, extra_ids):
    self.sp = spm.SentencePieceProcessor(model_file=path)
    size = self.sp.get_piece_size()
    self.added = {f'<extra_id_{i}>': size + extra_ids - 1 - i for i in range(extra_ids)}
    self._added_by_id = {i: t for t, i in self.added.items()}
    self.vocab_size = size + extra_ids
    self._split = None

  def add_special(self, names):
    self._specials = {n: self.token_to_id(n) for n in names if self.token_to_id(n) is not None}
    self._specials.update(self.added)
    alternatives = sorted(self._specials, key=len, reverse=True)
    self._split = re.compile('(' + '|'.join(map(re.escape, alternatives)) + ')')

  def encode(self, text):
    ids = []
    for i, part in enumerate(self._split.split(text)):
      if i % 2:
        ids.append(self._specials[part])
      elif part:
        ids += self.sp.encode(part)
    return ids

  def encode_batch(self, texts):
    return [self.encode(t) for t in texts]

  def byte_lengths(self):
    return sentencepiece_byte_lengths(self.sp, self.vocab_size)

  def decode(self, ids):
    """Text of `ids`: added and control tokens by name, ids it lacks skipped."""
    parts, run = [], []
    for i in ids:
      if not 0 <= i < self.vocab_size:
        continue
      if i >= self.sp.get_piece_size() or self.sp.is_control(i):
        parts += [self.sp.decode(run), self.id_to_token(i)]
        run = []
      else:
        run.append(i)
    return ''.join(parts + [self.sp.decode(run)])

  def token_to_id(self, token):
    if token in self.added:
      return self.added[token]
    i = self.sp.piece_to_id(token)
    return i if self.sp.id_to_piece(i) == token else None

  def id_to_token(self, i):
    """The token of id `i`; None for an id it lacks (as tokenizers' id_to_token)."""
    i = int(i)
    if 0 <= i < self.sp.get_piece_size():
      return self.sp.id_to_piece(i)
    return self._added_by_id.get(i)


def _wordpiece(directory):
  """BertTokenizer's pipeline over vocab.txt (lower-casing etc. from tokenizer_config.json)."""
  config = hf_files.read_json(os.path.join(directory, 'tokenizer_config.json'))
  with open(os.path.join(directory, hf_files.VOCAB_TXT), encoding='utf-8') as f:
    vocab = {line.rstrip('\n'): i for i, line in enumerate(f)}
  unk = hf_files.content(config.field('unk_token', str, dict)) or '[UNK]'
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, strip_accents=config.field('strip_accents', bool),
      handle_chinese_chars=config.field('tokenize_chinese_chars', bool, default=True),
      lowercase=config.field('do_lower_case', bool, default=True))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix='##')
  return tok


def _byte_level_bpe(directory):
  """GPT2Tokenizer's / RobertaTokenizer's pipeline over vocab.json + merges.txt."""
  config = hf_files.read_json(os.path.join(directory, 'tokenizer_config.json'))
  tok = tokenizers.Tokenizer(models.BPE.from_file(
      os.path.join(directory, hf_files.VOCAB_JSON), os.path.join(directory, hf_files.MERGES),
      continuing_subword_prefix='', end_of_word_suffix='', fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(
      add_prefix_space=config.field('add_prefix_space', bool, default=False))
  tok.decoder = decoders.ByteLevel()
  return tok


def _added_tokens(directory):
  """Tokens tokenizer_config.json's added_tokens_decoder or added_tokens.json add, by id."""
  decoder = hf_files.read_json(os.path.join(directory, 'tokenizer_config.json')).child(
      'added_tokens_decoder')
  added = {_token_id(decoder, key): _added_token(decoder.child(key)) for key in decoder}
  listed = hf_files.read_json(os.path.join(directory, 'added_tokens.json'))
  for token in listed:
    added.setdefault(listed.require(token, int), tokenizers.AddedToken(token, special=True))
  return [added[i] for i in sorted(added)]


def _token_id(decoder, key):
  """A key of added_tokens_decoder: the token's id, written as a non-negative integer."""
  if not re.fullmatch('[0-9]+', key):
    raise ConfigError(f'{decoder.path}: "{decoder.scope}" has the key "{key}", which is not a '
                      'token id (a non-negative integer)')
  return int(key)


def _added_token(entry):
  """An added_tokens_decoder entry ({"content": "<x>", "special": true, ...}) as an AddedToken."""
  special = entry.field('special', bool, default=False)
  flags = {k: entry.field(k, bool, default=False) for k in ('single_word', 'lstrip', 'rstrip')}
  return tokenizers.AddedToken(entry.require('content', str), special=special,
                               normalized=entry.field('normalized', bool, default=not special),
                               **flags)


def load_backend(directory):
  """(backend, built): the tokenizer of `directory`; `built` is the tokenizers.Tokenizer made from
  vocabulary files (None when read from tokenizer.json or spiece.model)."""
  kind, name = hf_files.backend_files(directory)
  path = os.path.join(directory, name)
  with hf_files.reading(path, f'a {kind} tokenizer'):   # the Rust side raises plain Exception
    if kind == 'sentencepiece':
      return _SentencePiece(path, hf_files.t5_extra_ids(directory)), None
    if kind == 'tokenizers':
      return _Tokenizers(tokenizers.Tokenizer.from_file(path)), None
    built = _wordpiece(directory) if kind == 'wordpiece' else _byte_level_bpe(directory)
  built.add_tokens(_added_tokens(directory))
  return _Tokenizers(built), built


class HFTokenizer:
  """A checkpoint's own tokenizer with the ids of our contract (see the module docstring)."""

  kind = 'huggingface'

  def __init__(self, directory, *, model_config=None):
    self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    self._backend, self.built = load_backend(self.directory)
    self.vocab_size = self._backend.vocab_size
    self.special_tokens = hf_files.special_tokens(self.directory, model_config,
                                                  self._backend.id_to_token)
    ids = {}
    for role, token in self.special_tokens.items():
      ids[role] = self._backend.token_to_id(token)
      if ids[role] is None:
        raise ConfigError(f'{self.directory}: the {role}_token {token!r} its files name is not '
                          f'in the vocabulary of {hf_files.backend_files(self.directory)[1]}')
    self._backend.add_special(list(self.special_tokens.values()) +
                              hf_files.extra_tokens(self.directory))
    for token in special_tokens.TOKENS:
      setattr(self, token.attribute, self._special_id(token, ids))
    self.has_pad = self.pad_id is not None
    self.pad_id = self.pad_id if self.has_pad else 0
    self.vocab_size = self._backend.vocab_size   # unchanged: every special token was in it

  def _special_id(self, token, named):
    """The id of registry entry `token`: a role by the files' name for it, else its partner's;
    another entry by its piece; a numbered family's ids <piece 0>, <piece 1>, ... while found."""
    if token.hf_role:
      return named.get(token.name, named.get(token.partner))
    if token.kind != 'numbered':
      return self._backend.token_to_id(token.piece)
    ids = []
    while (i := self._backend.token_to_id(token.piece.format(len(ids)))) is not None:
      ids.append(i)
    return ids

  def encode(self, text):
    """str -> list of ids (no special tokens added)."""
    return self._backend.encode(text)

  def encode_batch(self, texts):
    return self._backend.encode_batch(texts)

  def decode(self, ids):
    """ids -> str: a leading BOS dropped, up to the first EOS, padding dropped (when the tokenizer
    has a pad token); other special tokens appear by name; ids the tokenizer lacks are skipped."""
    ids = [int(i) for i in ids]
    if ids and ids[0] == self.bos_id:
      ids = ids[1:]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._backend.decode([i for i in ids if not (self.has_pad and i == self.pad_id)])

  def id_to_piece(self, i):
    return self._backend.id_to_token(i)

  def byte_lengths(self):
    """(bytes [vocab], leading [vocab]): the UTF-8 bytes each id adds to decoded text (special
    tokens none) and 1 where decoding drops its first byte at the start of a text (the
    dummy-prefix space): what bits per byte counts (objectives/losses.py)."""
    return self._backend.byte_lengths()

  def vocabulary(self):
    """Every token string, by id (what `data.tokenizer` must match under `init_from`)."""
    return [self._backend.id_to_token(i) for i in range(self.vocab_size)]

  def save_to(self, directory):
    """Store the tokenizer files as directory/tokenizer/ (the trainer keeps one in every run)."""
    return hf_files.store(self.directory, os.path.join(directory, 'tokenizer'),
                          self.special_tokens, built=self.built)

  def __repr__(self):
    return f'HFTokenizer({self.directory!r}, vocab_size={self.vocab_size})'
