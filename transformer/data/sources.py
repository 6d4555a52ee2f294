"""Where raw examples come from: `config.data.source` -> a `Source` of tf.data datasets.

A source is one of
  * a TFDS name with optional config/version (`lm1b`, `c4`, `wmt14_translate/de-en`, `glue/sst2`,
    our embedded `python_stdlib/text`, `python_stdlib/docstrings`, `gettext_catalogs/en_de`, or
    any other TFDS dataset whose fields are named by `data.text_key` / `inputs_key` / ...);
  * `text:/path/*.txt`: one example per non-empty line;
  * `jsonl:/path/*.jsonl`: one JSON object per line, fields named by the `data.*_key` keys;
  * images (data/image_sources.py): `digits` (scikit-learn's, embedded), `images:/path` (one
    folder per class), or the TFDS image datasets mnist, cifar10, imagenette, imagenet2012.

Every source hands out the same thing: `source.dataset(split, roles, ...)`, a tf.data dataset of
dicts keyed by *role* ('text', 'inputs', 'targets', 'label', or any field an objective declares,
e.g. 'image'), whatever the field is called in the data (`data.<role>_key`), in a fixed order (or
a seeded file order). `roles` is the objective's declaration ({role: kind}, data/fields.py) or
bare role names (their usual kinds); a local source builds each column in its kind's dtype.
Shuffling, repetition and tokenization are the pipeline's job. Bad names, globs and fields raise
a one-line `ConfigError`.

A jsonl label is a class id: a non-negative integer, or a float with an integral value (pandas
writes `1.0`), which becomes that integer. Anything else (a string such as "positive", 0.5, true,
null) is refused in one line naming the file, line, key and value when the label is asked for
(`require`), so before a tokenizer is trained; string labels are not mapped to ids here, since a
mapping of names the run does not record could differ between training, eval and resume. A label
of the score kind (regression, fields.SCORE) must be a number instead, and a field the objective
reads (e.g. a pair's `text_pair`) must be in every record: both refused the same way.

GLUE's tasks (data/glue.py) are KNOWN by their TFDS names with their fields ('text' and, for
sentence pairs, 'text_pair'); `data.text_to_text=<task>` reads any source of such examples as
T5's text-to-text pairs ('inputs', 'targets'; glue_source.py). `data.prefix_pairs=True` reads
any text source as T5's prefix-LM pairs, each text cut once (prefix_pairs.py).
"""

import dataclasses
import fcntl
import glob
import json
import math
import os
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from transformer.data import fields as fields_lib
from transformer.data import gettext_corpus
from transformer.data import glue
from transformer.data import image_sources
from transformer.data import stdlib_corpus
from transformer.errors import ConfigError

ROLES = ('text', 'text_pair', 'inputs', 'targets', 'label')
LOCAL_VALIDATION_PERCENT = 5


@dataclasses.dataclass(frozen=True)
class Known:
  """Defaults for a TFDS dataset we know: its full name, fields per role and split names."""
  name: str
  fields: dict
  splits: dict = dataclasses.field(default_factory=dict)   # our split name -> TFDS split


_PAIRS = {'inputs': 'inputs', 'targets': 'targets'}
_WMT = {'inputs': 'en', 'targets': 'de'}
_IMAGES = {'image': 'image', 'label': 'label'}
KNOWN = {
    'lm1b': Known('lm1b', {'text': 'text'}, {'validation': 'test'}),
    'c4': Known('c4/en', {'text': 'text'}),
    'c4/en': Known('c4/en', {'text': 'text'}),
    'wikipedia': Known('wikipedia/20230601.en', {'text': 'text'},
                       {'train': 'train[:99%]', 'validation': 'train[99%:]'}),
    'wikipedia/20230601.en': Known('wikipedia/20230601.en', {'text': 'text'},
                                   {'train': 'train[:99%]', 'validation': 'train[99%:]'}),
    'wmt14_translate/de-en': Known('wmt14_translate/de-en', _WMT),
    'wmt17_translate/de-en': Known('wmt17_translate/de-en', _WMT),
    **{t.tfds: Known(t.tfds, t.fields, {'validation': t.eval_splits[0]}) for t in
       glue.TASKS.values()},
    'python_stdlib': Known('python_stdlib/text', {'text': 'text'}),
    'python_stdlib/text': Known('python_stdlib/text', {'text': 'text'}),
    'python_stdlib/docstrings': Known('python_stdlib/docstrings', _PAIRS),
    'gettext_catalogs': Known('gettext_catalogs/en_de', _PAIRS),
    'gettext_catalogs/en_de': Known('gettext_catalogs/en_de', _PAIRS),
    'mnist': Known('mnist', _IMAGES, {'validation': 'test'}),
    'cifar10': Known('cifar10', _IMAGES, {'validation': 'test'}),
    'imagenette': Known('imagenette', _IMAGES),
    'imagenet2012': Known('imagenet2012', _IMAGES),
}
_LOCAL_BUILDERS = ('python_stdlib', 'gettext_catalogs')


def data_dir(config):
  """The TFDS data_dir: `data.data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  explicit = config.data.data_dir or os.environ.get('TFDS_DATA_DIR', '')
  return os.path.expanduser(explicit or '~/tensorflow_datasets')


def _configured_key(config, role):
  """`data.<role>_key`; '' where the config has no such key (a role only some objectives read)."""
  return config.data.get(f'{role}_key', '')


class Source:
  """Raw examples of one data source, keyed by role."""

  name = ''

  def field(self, role):
    """The data's field for `role`, or None when this source has none."""
    raise NotImplementedError

  def require(self, roles):
    """ConfigError unless every role has a field (checked before any data is read)."""
    for role in roles:
      if self.field(role) is None:
        raise ConfigError(
            f'`data.{role}_key`: source {self.name!r} has no default {role!r} field; '
            f'set --config.data.{role}_key to one of: {", ".join(self.available_fields())}')

  def available_fields(self):
    raise NotImplementedError

  def dataset(self, split, roles, *, shard=(0, 1), file_seed=None):
    """tf.data dataset of {role: tensor} for `split`, shard `shard` = (index, count).

    The order is fixed; with `file_seed` the order of the underlying files is shuffled by it.
    """
    raise NotImplementedError

  def fingerprint(self):
    """A string that changes when the data changes (keys the tokenizer cache)."""
    return self.name


class TfdsSource(Source):
  """A TFDS dataset (prepared into data_dir at first use; no download for our own builders)."""

  def __init__(self, config, spec):
    self.config = config
    known = KNOWN.get(spec.split(':')[0])
    self.name = known.name if known else spec
    self.known = known
    base = self.name.split('/')[0]
    if base == 'gettext_catalogs' and not gettext_corpus.catalog_paths():
      raise ConfigError(
          f'`data.source={spec!r}`: no gettext catalogs in '
          f'{gettext_corpus.LOCALE_DIR.format(lang="de")}; use '
          f'--config.data.source=python_stdlib/docstrings')
    try:
      self.builder = tfds.builder(self.name, data_dir=data_dir(config))
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ConfigError(f'`data.source={spec!r}`: not a TFDS dataset ({first}); '
                        f'use a TFDS name, text:/glob or jsonl:/glob') from None
    self._prepare(spec, local=base in _LOCAL_BUILDERS)

  def _prepare(self, spec, local):
    if self.builder.is_prepared():
      return
    config = tfds.download.DownloadConfig(try_download_gcs=not local)
    root = data_dir(self.config)
    os.makedirs(root, exist_ok=True)
    # One preparer per dataset and machine: runs started side by side (a sweep with --parallel,
    # several local processes) wait here for the first one instead of writing the same files.
    lock_name = re.sub(r'[^A-Za-z0-9_.-]', '_', self.name) + '.prepare.lock'
    try:
      with open(os.path.join(root, lock_name), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
          if self.builder.is_prepared():   # by another process: read its dataset_info
            self.builder = tfds.builder(self.name, data_dir=root)
          else:
            self.builder.download_and_prepare(download_config=config)
        finally:
          fcntl.flock(lock, fcntl.LOCK_UN)
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      raise ConfigError(
          f'`data.source={spec!r}`: could not prepare it in {data_dir(self.config)} '
          f'({type(e).__name__}: {first}); prepare it where there is internet or use '
          f'--config.data.source=python_stdlib/text') from None

  def features(self):
    features = self.builder.info.features
    return list(features.keys()) if hasattr(features, 'keys') else []

  def available_fields(self):
    return self.features()

  def field(self, role):
    key = _configured_key(self.config, role)
    if not key and self.known:
      key = self.known.fields.get(role, '')
    if not key and role in self.features():
      key = role
    if not key:
      return None
    if self.features() and key not in self.features():
      raise ConfigError(
          f'`data.{role}_key={key!r}`: {self.name!r} has no such field; '
          f'use one of: {", ".join(self.features())}')
    return key

  def tfds_split(self, split):
    """Our split name -> the TFDS split (e.g. lm1b has no 'validation': its 'test' is used)."""
    tfds_split = (self.known.splits.get(split, split) if self.known else split)
    available = list(self.builder.info.splits.keys())
    bases = [re.split(r'[\[\s]', part.strip())[0] for part in tfds_split.split('+')]
    missing = [b for b in bases if available and b not in available]
    if missing:
      raise ConfigError(
          f'`data.train_split|eval_split={split!r}`: {self.name!r} has '
          f'splits {", ".join(available)}; set the key to one of them')
    return tfds_split

  def dataset(self, split, roles, *, shard=(0, 1), file_seed=None):
    self.require(roles)
    tfds_split = self.tfds_split(split)
    if shard[1] > 1:
      tfds_split = tfds.even_splits(tfds_split, n=shard[1], drop_remainder=True)[shard[0]]
    read_config = tfds.ReadConfig(shuffle_seed=file_seed, try_autocache=False)
    ds = self.builder.as_dataset(split=tfds_split, shuffle_files=file_seed is not None,
                                 read_config=read_config)
    fields = {role: self.field(role) for role in roles}
    return ds.map(lambda ex: {role: ex[key] for role, key in fields.items()})

  def fingerprint(self):
    return f'{self.name}:{self.builder.version}'


def class_id(value):
  """`value` as a class id (an int >= 0; an integral float counts), or None when it is none."""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
    return None
  return value


def number(value):
  """`value` as a finite float (a regression label), or None when it is no number."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) else None


# How a jsonl value of each label kind is read (None: refused with _LOCAL_WANTED's words).
_LOCAL_VALUES = {'label': class_id, 'score': number}
_LOCAL_WANTED = {
    'label': 'not a class id; labels must be integers 0, 1, ... (1.0 counts as 1): write each '
             'name as its id, e.g. its index in the sorted names',
    'score': 'not a number; a regression label (model.num_classes=1) must be a number, e.g. 3.8'}


def _is_local_validation(line):
  return stdlib_corpus.is_validation(line, LOCAL_VALIDATION_PERCENT)


class LocalSource(Source):
  """`text:` / `jsonl:` files, read into memory once; ~5% of lines (by hash) are validation,
  never none for 2+ lines (stdlib_corpus.validation_ids: then the lowest-hash line)."""

  def __init__(self, config, kind, pattern):
    self.config = config
    self.kind = kind
    self.name = f'{kind}:{pattern}'
    self.paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not self.paths:
      raise ConfigError(f'`data.source={self.name!r}`: the glob matches no files; '
                        f'give an existing path, e.g. {kind}:/data/*.{kind.replace("text", "txt")}')
    self.records = {'train': [], 'validation': []}
    self.located = []   # (path, line number, record) of every record, in file order
    lines = []
    for path in self.paths:
      with open(path, encoding='utf-8') as f:
        lines += [(line.rstrip('\n'), path, lineno) for lineno, line in enumerate(f, 1)
                  if line.strip()]
    chosen = stdlib_corpus.validation_ids((line for line, _, _ in lines),
                                          LOCAL_VALIDATION_PERCENT)
    for line, path, lineno in lines:
      split = 'validation' if line in chosen else 'train'
      self.records[split].append(self._parse(line, path, lineno))
      self.located.append((path, lineno, self.records[split][-1]))

  def _parse(self, line, path, lineno):
    if self.kind == 'text':
      return {'text': line}
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ConfigError(f'`data.source`: {path}:{lineno} is not valid JSON ({e.msg}); '
                        f'fix the file or use text:') from None
    if not isinstance(record, dict):
      raise ConfigError(f'`data.source`: {path}:{lineno} is not a JSON object; '
                        f'each line of a jsonl: file must be an object')
    return record

  def require(self, roles):
    """As Source.require; for jsonl files also a ConfigError at the first record that lacks a
    configured field or whose label is no class id (a score: no number), naming file and line
    (see the module docstring)."""
    super().require(roles)
    if self.kind != 'jsonl':
      return
    kinds = fields_lib.as_kinds(roles)
    for role, kind in kinds.items():
      key = self.field(role)
      for path, lineno, record in self.located:
        if key not in record:
          raise ConfigError(f'`data.{role}_key={key}`: {path}:{lineno} has no {key!r} field; '
                            f'every record needs it: add it, or set --config.data.{role}_key '
                            f'to one of: {", ".join(sorted(record))}')
        if kind.name in _LOCAL_VALUES and _LOCAL_VALUES[kind.name](record[key]) is None:
          shown = json.dumps(record[key])
          shown = shown if len(shown) <= 40 else shown[:37] + '...'
          raise ConfigError(f'`data.{role}_key={key}`: {path}:{lineno} has {shown}, '
                            f'{_LOCAL_WANTED[kind.name]}')

  def available_fields(self):
    if self.kind == 'text':
      return ['text']
    first = next(iter(self.records['train'] or self.records['validation']), {})
    return sorted(first)

  def field(self, role):
    """text: files have only 'text'. jsonl: the configured `data.<role>_key`, else the role's own
    name when the records have such a field, else None (so a {"text", "label"} file is no pair)."""
    if self.kind == 'text':
      return 'text' if role == 'text' else None
    key = _configured_key(self.config, role)
    if key:
      return key
    first = next(iter(self.records['train'] or self.records['validation']), {})
    return role if role in first else None

  def _split_records(self, split):
    if split in ('train',):
      return self.records['train']
    if split in ('validation', 'test', 'eval'):
      return self.records['validation']
    raise ConfigError(f'`data.train_split|eval_split={split!r}`: {self.name} '
                      f'has splits train and validation; set the key to one of them')

  def dataset(self, split, roles, *, shard=(0, 1), file_seed=None):
    del file_seed  # The pipeline's shuffle buffer covers in-memory data.
    self.require(roles)
    records = self._split_records(split)[shard[0]::shard[1]]
    kinds = fields_lib.as_kinds(roles)
    columns = {}
    for role in roles:   # every record has every field: require checked them
      key, read = self.field(role), _LOCAL_VALUES.get(kinds[role].name, lambda v: v)
      columns[role] = tf.constant([read(record[key]) for record in records], kinds[role].dtype)
    if not records:
      columns = {role: tf.constant([], kinds[role].dtype) for role in roles}
    return tf.data.Dataset.from_tensor_slices(columns)

  def fingerprint(self):
    stats = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in self.paths]
    return f'{self.name}:{stats}'


def get_source(config):
  """`config.data.source` -> a Source (TFDS builders prepared, local files read)."""
  spec = str(config.data.source).strip()
  if not spec:
    raise ConfigError('`data.source=`: empty; set it, e.g. '
                      '--config.data.source=python_stdlib/text')
  kind, sep, rest = spec.partition(':')
  name = config.data.get('text_to_text', '')
  task = glue.get(name) if name else None   # checked before any data is read
  if spec == 'digits' or (sep and kind == 'images'):
    return (image_sources.DigitsSource(config) if spec == 'digits' else
            image_sources.FolderSource(config, rest))
  source = (LocalSource(config, kind, rest) if sep and kind in ('text', 'jsonl') else
            TfdsSource(config, spec))
  if task:
    from transformer.data import glue_source  # pylint: disable=import-outside-toplevel
    return glue_source.TextToText(source, task)
  if config.data.get('prefix_pairs', False):
    from transformer.data import prefix_pairs  # pylint: disable=import-outside-toplevel
    return prefix_pairs.PrefixPairs(source)
  return source


# Importing this module registers our builders with TFDS.
_BUILDERS = (stdlib_corpus.PythonStdlib, gettext_corpus.GettextCatalogs)
