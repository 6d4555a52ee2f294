"""The input contract: the fields of a raw example, each of a kind, declared once by the objective.

  class Classification(Objective):
    fields = {'text': fields.TEXT, 'label': fields.LABEL}   # objectives/base.py reads it
  kinds = fields.declared(objective)   # {name: Kind}; an object listing only example_fields
                                       # gets each name's usual kind ('label' LABEL, else TEXT)
  fields.reads_text(kinds)             # a tokenizer (and a vocabulary) only then
  fields.check_pack(kinds, pack, name) # a kind that is never packed refuses data.pack=True

A field is named as the source delivers it (`data.<name>_key` names its column in the data, see
sources.py) and travels by its kind:

  kind   raw value (tf.data)  what `objective.features` gets       its features in a batch
  text   bytes (UTF-8)        1-D int32 token ids (the tokenizer;   token streams [B, L] cut to
                              'text' cut into text_chunk_len        their stream length, with
                              chunks)                                segment ids and positions
  label  an integer           a Python int                          a scalar [B]
  image  an array [H, W, C]   the array, as read                    passed through whole under
                                                                     the field's name:
                                                                     [B, H, W, C], never packed

Each kind says how a raw value is read and checked (`read`), whether the tokenizer runs over it
(`tokenized`), whether its examples may share a row (`packable`), the column type a local source
builds for it (`dtype`), and what one position of the model's sequence is when it feeds the
model (`unit` / `units`: a token; a patch for images) with `labels(tokenizer, ids)`, the names the
attention pictures put on their axes (None: numbered positions). A new modality is one more
Kind here (see docs/ARCHITECTURE.md, "where a new modality goes").
"""

import dataclasses
from typing import Callable

import numpy as np

from transformer.errors import ConfigError


def _text(value):
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


def _image(value):
  array = np.asarray(value)
  if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.number):
    raise ValueError(f'an image field must be a numeric [H, W] or [H, W, C] array, got '
                     f'{array.dtype} of shape {array.shape}')
  return array


def _token_strings(tokenizer, ids):
  """The vocabulary entry of each id (SentencePiece pieces keep their word-start mark)."""
  piece = getattr(tokenizer, 'id_to_piece', None)
  return [piece(int(i)) if piece else tokenizer.decode([int(i)]) for i in ids]


@dataclasses.dataclass(frozen=True)
class Kind:
  """How one kind of field travels (see the module docstring)."""
  name: str
  read: Callable                # raw value from tf.data (numpy) -> the value features gets
  dtype: str                    # the tf dtype of a local source's column
  tokenized: bool = False
  packable: bool = True
  unit: str = 'token'
  units: str = 'tokens'
  labels: Callable = None       # (tokenizer, ids) -> axis labels of the attention pictures


TEXT = Kind('text', _text, 'string', tokenized=True, labels=_token_strings)
LABEL = Kind('label', int, 'int64')
IMAGE = Kind('image', _image, 'uint8', packable=False, unit='patch', units='patches')
KINDS = {k.name: k for k in (TEXT, LABEL, IMAGE)}


def usual_kind(name):
  """The kind a field has when an objective names it without a kind: 'label' an integer class
  id, every other field (text, inputs, targets) text."""
  return LABEL if name == 'label' else TEXT


def as_kinds(fields):
  """{name: Kind} of a declaration ({name: Kind}) or of bare field names (their usual kinds)."""
  if isinstance(fields, dict):
    return dict(fields)
  return {name: usual_kind(name) for name in fields}


def declared(objective):
  """{name: Kind} the objective (an instance or class) declares: its `fields`, else its
  `example_fields` names with their usual kinds."""
  kinds = getattr(objective, 'fields', None)
  return as_kinds(kinds if kinds is not None else getattr(objective, 'example_fields', ()))


def reads_text(kinds):
  """Whether any field is tokenized: only then is a tokenizer built and a vocabulary needed."""
  return any(kind.tokenized for kind in kinds.values())


def passed_through(kinds):
  """The fields whose features keep their own name and shape in a batch (images)."""
  return tuple(name for name, kind in kinds.items() if not kind.packable)


def check_pack(kinds, pack, objective_name):
  """ConfigError when data.pack asks to pack examples holding a field that is never packed."""
  unpacked = passed_through(kinds)
  if pack and unpacked:
    kind = kinds[unpacked[0]].name
    raise ConfigError(f'`data.pack=True`: objective {objective_name} reads the {kind} field '
                      f'{unpacked[0]!r}, which is never packed; set --config.data.pack=False')


def sequence_kind(kinds):
  """The kind whose positions make the model's sequence (its unit and axis labels): the first
  text field, else the first field that is passed through, else text."""
  for want in (lambda k: k.tokenized, lambda k: not k.packable):
    found = [k for k in kinds.values() if want(k)]
    if found:
      return found[0]
  return TEXT
