"""The files of a Hugging Face tokenizer: which backend they need, their special tokens, storing.

A checkpoint directory's tokenizer is read as `transformers.AutoTokenizer` reads it:
  tokenizer.json                    any fast tokenizer (BERT WordPiece, GPT-2 / BART byte-level
                                    BPE, ...), through the `tokenizers` library
  spiece.model                      SentencePiece (T5), through sentencepiece
  vocab.txt | vocab.json+merges.txt WordPiece / byte-level BPE when there is no tokenizer.json,
                                    built with `tokenizers` the way the tokenizer class builds it
The special tokens come from the checkpoint's own files, later ones winning: the defaults of its
tokenizer class (tokenizer_config.json `tokenizer_class`, else config.json `model_type`),
special_tokens_map.json, tokenizer_config.json, then config.json's pad/bos/eos_token_id for
roles still unnamed. A stored tokenizer (import-hf output, a run) keeps those files verbatim plus
SPECIAL_RECORD, the resolved {role: token}, so it loads the same without the checkpoint's
config.json.

Malformed files are one-line ConfigErrors naming the file, never tracebacks, by two means that
every reader of a checkpoint shares: a JSON value is taken with the JSON type it must have
(`JsonObject.field`, `typed`: the file and key in the line), and a file a library parses (weights,
tokenizer models) is read under `reading(path, what)`, which turns whatever the parser raises
into one line naming the file.
"""

import contextlib
import json
import os
import shutil

from transformer.data import special_tokens
from transformer.errors import ConfigError

TOKENIZER_JSON, SPIECE, VOCAB_TXT, VOCAB_JSON, MERGES = (
    'tokenizer.json', 'spiece.model', 'vocab.txt', 'vocab.json', 'merges.txt')
CONFIG_FILES = ('tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json')
TOKENIZER_FILES = (TOKENIZER_JSON, SPIECE, VOCAB_TXT, VOCAB_JSON, MERGES) + CONFIG_FILES
SPECIAL_RECORD = 'special_tokens.json'
RUN_HF_TOKENIZER = 'tokenizer'          # a run's / an import's Hugging Face tokenizer directory
IMPORT_RECORD = 'tokenizer_info.json'  # import-hf: the tokenizer of the imported weights, if any
ROLES = special_tokens.hf_roles()     # ('pad', 'eos', 'unk', 'bos', 'mask', 'sep', 'cls')

# What each tokenizer class names when its files are silent (transformers' __init__ defaults).
CLASS_DEFAULTS = {
    'bert': dict(unk='[UNK]', sep='[SEP]', pad='[PAD]', cls='[CLS]', mask='[MASK]'),
    'gpt2': dict(unk='<|endoftext|>', bos='<|endoftext|>', eos='<|endoftext|>'),
    'bart': dict(bos='<s>', eos='</s>', sep='</s>', cls='<s>', unk='<unk>', pad='<pad>',
                 mask='<mask>'),
    't5': dict(eos='</s>', unk='<unk>', pad='<pad>'),
}
_CLASS_NAMES = (('roberta', 'bart'), ('bart', 'bart'), ('gpt2', 'gpt2'), ('t5', 't5'),
                ('bert', 'bert'))
T5_EXTRA_IDS = 100   # T5Tokenizer's default number of <extra_id_N> sentinels


_KINDS = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
          list: 'a list', dict: 'an object'}   # what a value must be
_IS = {**_KINDS, bool: 'a boolean'}            # what it is


def _is(value, kind):
  """Whether JSON `value` has JSON type `kind` (an integer is a number, true is no number)."""
  if isinstance(value, bool):
    return kind is bool
  return isinstance(value, (int, float) if kind is float else kind)


def typed(path, key, value, *kinds):
  """`value`, the `key` of JSON file `path`, when its JSON type is one of `kinds` (of bool, int,
  float, str, list, dict); else a one-line ConfigError naming the file and key."""
  if value is None:
    raise ConfigError(f'{path}: "{key}" is missing')
  if not any(_is(value, kind) for kind in kinds):
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 40 else shown[:37] + '...'
    raise ConfigError(f'{path}: "{key}" is {shown} ({_IS[type(value)]}); it must be '
                      f'{" or ".join(_KINDS[kind] for kind in kinds)}')
  return value


class JsonObject(dict):
  """A JSON object read from `path` (at `scope`, the keys above it, for one nested inside), whose
  values are taken with the JSON type they must have."""

  def __init__(self, values, path, scope=''):
    super().__init__(values)
    self.path, self.scope = path, scope

  def name(self, key):
    return f'{self.scope}.{key}' if self.scope else key

  def field(self, key, *kinds, default=None):
    """The value of `key` (`default` when absent or null), of one of the JSON types `kinds`."""
    value = self.get(key)
    return default if value is None else typed(self.path, self.name(key), value, *kinds)

  def require(self, key, *kinds):
    """The value of `key`, of one of the JSON types `kinds`; absent or null is an error."""
    return typed(self.path, self.name(key), self.get(key), *kinds)

  def child(self, key):
    """The object at `key` (empty when absent) as a JsonObject."""
    return JsonObject(self.field(key, dict, default={}), self.path, self.name(key))


@contextlib.contextmanager
def reading(path, what, fix=None):
  """Whatever but a ConfigError reading `path` as `what` raises -> one line naming the file."""
  try:
    yield
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (anything a malformed file can cause)
    reason = ' '.join(str(e).split())[:200] or type(e).__name__
    raise ConfigError(f'{path}: cannot be read as {what} ({reason})' +
                      (f'; {fix}' if fix else '')) from None


def read_json(path, *, required=False):
  """The JsonObject in `path`; empty when absent (unless `required`); one-line error if broken."""
  if not os.path.isfile(path):
    if required:
      raise ConfigError(f'{path}: missing')
    return JsonObject({}, path)
  with reading(path, 'JSON'):
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  if not isinstance(value, dict):
    raise ConfigError(f'{path}: must hold a JSON object')
  return JsonObject(value, path)


def content(value):
  """A special-token entry of tokenizer_config.json: a string or {"content": ...} (AddedToken)."""
  if isinstance(value, dict):
    value = value.get('content')
  return value if isinstance(value, str) and value else None


def backend_files(directory):
  """('tokenizers', tokenizer.json) | ('sentencepiece', spiece.model) | ('wordpiece', vocab.txt)
  | ('bpe', vocab.json): the files that define the vocabulary, in AutoTokenizer's order."""
  has = lambda name: os.path.isfile(os.path.join(directory, name))
  if has(TOKENIZER_JSON):
    return 'tokenizers', TOKENIZER_JSON
  if has(SPIECE):
    return 'sentencepiece', SPIECE
  if has(VOCAB_TXT):
    return 'wordpiece', VOCAB_TXT
  if has(VOCAB_JSON):
    if not has(MERGES):
      raise ConfigError(f'{os.path.join(directory, MERGES)}: missing; a byte-level BPE '
                        f'tokenizer needs merges.txt beside its vocab.json')
    return 'bpe', VOCAB_JSON
  raise ConfigError(f'{directory}: no tokenizer files; expected {TOKENIZER_JSON}, {SPIECE}, '
                    f'{VOCAB_TXT} or {VOCAB_JSON} + {MERGES} (or import-hf --weights_only)')


def class_kind(directory, model_type=None):
  """'bert' | 'gpt2' | 'bart' | 't5' | None: whose defaults the special tokens start from."""
  name = str(read_json(os.path.join(directory, 'tokenizer_config.json')).field(
      'tokenizer_class', str) or model_type or '').lower()
  return next((kind for key, kind in _CLASS_NAMES if key in name), None)


def special_tokens(directory, model_config=None, id_to_token=None):
  """{role: token string} for the roles of ROLES that the checkpoint's files name.

  `model_config` is the checkpoint's config.json (for its *_token_id and model_type) and
  `id_to_token` maps those ids to strings.
  """
  recorded = read_json(os.path.join(directory, SPECIAL_RECORD))
  if recorded:
    return {role: recorded[role] for role in ROLES if content(recorded.get(role))}
  model_config = model_config or {}
  tokens = dict(CLASS_DEFAULTS.get(class_kind(directory, model_config.get('model_type')), {}))
  for name in ('special_tokens_map.json', 'tokenizer_config.json'):
    values = read_json(os.path.join(directory, name))
    for role in ROLES:
      if f'{role}_token' in values:   # null: the role has no token
        tokens[role] = content(values.field(f'{role}_token', str, dict))
  for role in ('pad', 'bos', 'eos'):
    token_id = model_config.get(f'{role}_token_id')
    if role not in tokens and isinstance(token_id, int) and id_to_token:
      tokens[role] = id_to_token(token_id)
  return {role: token for role, token in tokens.items() if token}


def extra_tokens(directory):
  """Other special tokens the files name (additional / extra special tokens), in order."""
  config = read_json(os.path.join(directory, 'tokenizer_config.json'))
  names = []
  for key in ('additional_special_tokens', 'extra_special_tokens'):
    value = config.field(key, list, dict) or read_json(
        os.path.join(directory, 'special_tokens_map.json')).field(key, list, dict) or []
    names += [content(v) for v in (value.values() if isinstance(value, dict) else value)]
  return [n for n in dict.fromkeys(names) if n]


def t5_extra_ids(directory):
  """How many <extra_id_N> a SentencePiece (T5) tokenizer appends: tokenizer_config.json's
  extra_ids, else the sentinels it lists, else T5Tokenizer's default of 100."""
  config = read_json(os.path.join(directory, 'tokenizer_config.json'))
  if config.field('extra_ids', int) is not None:
    return config['extra_ids']
  listed = [t for t in extra_tokens(directory) if t.startswith('<extra_id_')]
  return len(listed) or T5_EXTRA_IDS


def store(source_dir, out_dir, tokens, *, built=None):
  """Copy the tokenizer files of `source_dir` into `out_dir` and record the resolved `tokens`.

  `built` is a tokenizers.Tokenizer made from vocab files: it is written as tokenizer.json so
  that every stored tokenizer of a vocabulary-file checkpoint loads through one path.
  """
  os.makedirs(out_dir, exist_ok=True)
  if os.path.samefile(source_dir, out_dir):   # a run resumed with its own tokenizer
    return out_dir
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source_dir, name)):
      shutil.copyfile(os.path.join(source_dir, name), os.path.join(out_dir, name))
  if built is not None:
    built.save(os.path.join(out_dir, TOKENIZER_JSON))
  with open(os.path.join(out_dir, SPECIAL_RECORD), 'w', encoding='utf-8') as f:
    json.dump(tokens, f, indent=2, ensure_ascii=False)
  return out_dir
