"""The special tokens, one table: what every tokenizer, objective and export knows of them.

  for token in TOKENS: ...           # the registry, in id order for a trained SentencePiece model
  ids_of(tokenizer, 'sentinel')      # [ids] of one entry in a tokenizer (empty where it lacks it)
  has(tokenizer, 'mask')             # whether the tokenizer has it (objectives.get checks this)

An entry is one token, or one numbered family (the span-corruption sentinels):
  name      the role objectives ask for (`Objective.tokens`) and the tokenizer attribute that
            holds its id: `<name>_id` (None where the vocabulary lacks it), or for a numbered
            family `<name>_ids` (a list, empty where the vocabulary lacks any of them)
  kind      'meta': one of SentencePiece's own pad / eos / unk / bos, at the fixed id `sp_id`;
            'control': a SentencePiece control symbol (no text encodes to it; code inserts it by
            id, and decode shows it by name); 'numbered': `count` control symbols
            piece.format(i), i = 0, 1, ...
  piece     the piece string our SentencePiece training gives it (meta: SentencePiece's own)
  hf_role   Hugging Face tokenizer files name it as `<name>_token` (special_tokens_map.json,
            tokenizer_config.json, config.json's *_token_id); otherwise a Hugging Face tokenizer
            knows it by its piece string, and export-hf lists it among the extra special tokens
  partner   a Hugging Face tokenizer whose files leave this role unnamed takes the partner's
            token: eos <-> sep and bos <-> cls, so BERT's [CLS] / [SEP] frame a decoder example
            and GPT-2's <|endoftext|> is bos, eos, sep and cls at once

A trained SentencePiece model has the meta tokens at their sp_id, then the control and numbered
pieces in table order, then the learned pieces. So a new token goes at the END of the table, and
that one entry is all it takes: e.g. UL2's mode tokens
  Special('mode_r', 'control', '[R]'), Special('mode_x', 'control', '[X]'), ...
(the last entries) give both tokenizer kinds `mode_r_id` (None where the vocabulary lacks the piece), let an
objective list 'mode_r' in its `tokens` (a tokenizer without it is refused in one line), make
`objectives.base.special_ids` count it as structure, and put it among export-hf's special
tokens. Tokenizers trained before keep their ids (their files do not change), and the tokenizer
cache key covers the pieces added after the original ones (tokenizer.py), so a cached model
without the new piece is not reused.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Special:
  """One row of the registry (see the module docstring)."""
  name: str
  kind: str                   # 'meta' | 'control' | 'numbered'
  piece: str
  sp_id: int = None           # meta: its SentencePiece id
  hf_role: bool = False
  partner: str = None
  count: int = 1              # numbered: how many a trained SentencePiece model holds

  @property
  def attribute(self):
    """The tokenizer attribute holding its id (or its ids, for a numbered family)."""
    return f'{self.name}_ids' if self.kind == 'numbered' else f'{self.name}_id'

  def pieces(self):
    """The piece strings SentencePiece training gives it (a numbered family: all of them)."""
    if self.kind == 'numbered':
      return [self.piece.format(i) for i in range(self.count)]
    return [self.piece]


TOKENS = (
    Special('pad', 'meta', '<pad>', sp_id=0, hf_role=True),
    Special('eos', 'meta', '</s>', sp_id=1, hf_role=True, partner='sep'),
    Special('unk', 'meta', '<unk>', sp_id=2, hf_role=True),
    Special('bos', 'meta', '<s>', sp_id=3, hf_role=True, partner='cls'),
    Special('mask', 'control', '<mask>', hf_role=True),
    Special('sep', 'control', '<sep>', hf_role=True, partner='eos'),
    Special('cls', 'control', '<cls>', hf_role=True, partner='bos'),
    Special('sentinel', 'numbered', '<extra_id_{}>', count=32),
    Special('mode_r', 'control', '[R]'),    # UL2's mode tokens (objectives/ul2.py): regular,
    Special('mode_x', 'control', '[X]'),    # extreme and sequential denoising
    Special('mode_s', 'control', '[S]'),
)
ORIGINAL_CONTROL_PIECES = 35   # <mask> <sep> <cls> and 32 sentinels: the pieces of format 3


def by_name(name):
  return next(t for t in TOKENS if t.name == name)


def meta():
  return [t for t in TOKENS if t.kind == 'meta']


def structural():
  """The entries SentencePiece trains as control symbols (every one but the meta tokens)."""
  return [t for t in TOKENS if t.kind != 'meta']


def control_pieces():
  """Every control-symbol piece a trained SentencePiece model holds, in id order."""
  return [p for t in structural() for p in t.pieces()]


def hf_roles():
  """The roles Hugging Face tokenizer files name ('pad', 'eos', ...), in table order."""
  return tuple(t.name for t in TOKENS if t.hf_role)


def ids_of(tokenizer, name):
  """The ids entry `name` has in `tokenizer` (a list: one id, a numbered family's ids, or [])."""
  token = by_name(name)
  value = getattr(tokenizer, token.attribute, None)
  values = list(value or ()) if token.kind == 'numbered' else [value]
  return [int(i) for i in values if i is not None and i >= 0]


def has(tokenizer, name):
  return bool(ids_of(tokenizer, name))
