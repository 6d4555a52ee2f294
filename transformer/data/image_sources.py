"""Image sources (data/sources.py's interface): the embedded digits and local image folders.

  digits              scikit-learn's handwritten digits (sklearn.datasets.load_digits, shipped
                      inside the package: no download): 1,797 grey 8 x 8 images of 10 classes,
                      pixels 0..16 scaled to 0..255. A fixed split: every 6th image (index
                      i % 6 == 5, 299 images) is validation, the other 1,498 train.
  images:/path        /path/<class>/*.png|*.jpg|*.jpeg, one folder per class, class ids by the
                      sorted folder names; ~5% of the files (by a hash of their path under
                      /path) are validation, never none for 2+ files. Every file is read (PIL)
                      into memory when the source is made, so an unreadable file, a folder with
                      no images or a channel count other than model.num_channels is a one-line
                      ConfigError naming the path before anything is written.

Both give {'image': uint8 [H, W, C], 'label': int64}; a folder's images may differ in size (the
objective resizes them). TFDS image datasets (mnist, cifar10, imagenette, imagenet2012) are
TFDS sources (sources.KNOWN), which makes these two (sources.get_source).
"""

import os

import numpy as np
import tensorflow as tf

from transformer.data import stdlib_corpus
from transformer.errors import ConfigError

VALIDATION_PERCENT = 5   # of a folder's files, as sources.py's local text files
EXTENSIONS = ('.png', '.jpg', '.jpeg')
DIGITS_VALIDATION_EVERY = 6
# PIL modes -> channels; a palette or 1-bit image is read as RGB / grey
CHANNELS = {'L': 1, 'LA': 2, 'RGB': 3, 'RGBA': 4}
CONVERT = {'P': 'RGB', '1': 'L', 'PA': 'RGBA'}


class _ImageSource:
  """In-memory images and labels per split: {'train': (images, labels), 'validation': ...};
  the interface of sources.Source."""

  roles = ('image', 'label')

  def field(self, role):
    return role if role in self.roles else None

  def require(self, roles):
    for role in roles:
      if self.field(role) is None:
        raise ConfigError(f'`data.source={self.name}`: has no {role!r} field, only '
                          f'{", ".join(self.roles)}; use an objective that reads images')

  def available_fields(self):
    return list(self.roles)

  def _split(self, split):
    if split == 'train':
      return self.splits['train']
    if split in ('validation', 'test', 'eval'):
      return self.splits['validation']
    raise ConfigError(f'`data.train_split|eval_split={split!r}`: {self.name} has splits train '
                      'and validation; set the key to one of them')

  def dataset(self, split, roles, *, shard=(0, 1), file_seed=None):
    del file_seed   # in memory: the pipeline's shuffle buffer orders it
    self.require(roles)
    images, labels = self._split(split)
    images, labels = images[shard[0]::shard[1]], labels[shard[0]::shard[1]]
    channels = self.channels
    def generate():
      for image, label in zip(images, labels):
        yield {'image': image, 'label': np.int64(label)}
    spec = {'image': tf.TensorSpec([None, None, channels], tf.uint8),
            'label': tf.TensorSpec([], tf.int64)}
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(labels)))
    return ds.map(lambda ex: {role: ex[role] for role in roles})


def _check_channels(config, channels, where):
  want = int(config.model.get('num_channels', 0))
  if channels != want:
    raise ConfigError(f'`data.source={config.data.source}`: {where} has {channels} '
                      f'channel{"s" * (channels != 1)}, the model {want}; set '
                      f'--config.model.num_channels={channels} or convert the images')


def _check_classes(config, count):
  if count > int(config.model.get('num_classes', 0)):
    raise ConfigError(f'`model.num_classes={config.model.num_classes}`: '
                      f'{config.data.source} has {count} classes; set '
                      f'--config.model.num_classes={count}')


class DigitsSource(_ImageSource):
  """scikit-learn's digits (see the module docstring)."""

  channels = 1

  def __init__(self, config):
    try:
      import sklearn
      from sklearn.datasets import load_digits
    except ImportError:
      raise ConfigError('`data.source=digits`: scikit-learn is not installed; pip install -r '
                        'requirements.txt (it pins scikit-learn)') from None
    self.name, self.version = 'digits', sklearn.__version__
    digits = load_digits()
    _check_channels(config, 1, 'digits')
    _check_classes(config, 10)
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    held = np.arange(len(labels)) % DIGITS_VALIDATION_EVERY == DIGITS_VALIDATION_EVERY - 1
    self.splits = {'train': (list(images[~held]), labels[~held]),
                   'validation': (list(images[held]), labels[held])}

  def fingerprint(self):
    return f'digits:sklearn-{self.version}'


def read_image(path):
  """uint8 [H, W, C] of an image file; ConfigError naming the file when it is no image."""
  from PIL import Image   # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as image:
      image.load()
      mode = image.mode
      if mode in CONVERT:
        image = image.convert(CONVERT[mode])
      if image.mode not in CHANNELS:
        raise ValueError(f'pixel mode {mode} (only 8-bit grey, RGB and RGBA are read)')
      array = np.asarray(image, np.uint8)
  except (OSError, ValueError, SyntaxError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    raise ConfigError(f'`data.source`: {path} is not a readable image ({first}); replace or '
                      'remove it') from None
  return array if array.ndim == 3 else array[..., None]


class FolderSource(_ImageSource):
  """`images:/path/<class>/*.png|jpg` (see the module docstring)."""

  def __init__(self, config, root):
    self.name = f'images:{root}'
    self.root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(self.root):
      raise ConfigError(f'`data.source={self.name}`: {self.root} is not a directory; give a '
                        'folder holding one folder of images per class')
    self.files = self._files()
    self.classes = sorted({os.path.dirname(rel) for rel in self.files})
    _check_classes(config, len(self.classes))
    self.channels = int(config.model.get('num_channels', 0))
    chosen = stdlib_corpus.validation_ids(self.files, VALIDATION_PERCENT)
    self.splits = {'train': ([], []), 'validation': ([], [])}
    for rel in self.files:
      path = os.path.join(self.root, rel)
      image = read_image(path)
      _check_channels(config, image.shape[-1], path)
      images, labels = self.splits['validation' if rel in chosen else 'train']
      images.append(image)
      labels.append(self.classes.index(os.path.dirname(rel)))

  def _files(self):
    """Image paths under root, relative to it, one class folder deep, sorted."""
    files = []
    for name in sorted(os.listdir(self.root)):
      folder = os.path.join(self.root, name)
      if os.path.isdir(folder):
        files += [os.path.join(name, f) for f in sorted(os.listdir(folder))
                  if f.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(folder, f))]
    if not files:
      raise ConfigError(f'`data.source={self.name}`: no {"/".join(EXTENSIONS)} images in '
                        f'{self.root}/<class>/; put each class\'s images in a folder of its own')
    return files

  def fingerprint(self):
    stats = [(rel, os.path.getsize(os.path.join(self.root, rel))) for rel in self.files]
    return f'{self.name}:{stats}'
