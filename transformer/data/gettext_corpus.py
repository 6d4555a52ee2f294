"""`gettext_catalogs/en_de`: English -> German message pairs from the system's gettext catalogs.

Most Linux machines carry translated program messages in `/usr/share/locale/de/LC_MESSAGES/*.mo`.
They are real, human-made translations (tens of thousands of short UI and help strings) that need
no download: a small embedded translation task for encoder-decoder smoke runs.

The compiled catalogs are parsed with the stdlib `gettext` module. The header, empty entries and
untranslated (identical) entries are skipped (compiled catalogs already leave fuzzy entries out),
message contexts and plural forms are reduced to the singular message, accelerator markers
('_File', '&Open') are removed and whitespace is collapsed. Examples carry a stable id
(catalog + message) and are split into train/validation by a hash of it.
"""

import glob
import gettext
import os
import re

import tensorflow_datasets as tfds

from transformer.data import stdlib_corpus

LOCALE_DIR = '/usr/share/locale/{lang}/LC_MESSAGES'
MAX_CHARS = 300              # longer help texts are left out: they make poor sentence pairs
_ACCELERATOR = re.compile(r'(?<![\w&_])[_&](?=\w)')
_SPACE = re.compile(r'\s+')
_LETTER = re.compile(r'[^\W\d_]')


def catalog_paths(lang='de'):
  """The sorted compiled catalogs (.mo) for `lang` on this machine ([] when there are none)."""
  return sorted(glob.glob(os.path.join(LOCALE_DIR.format(lang=lang), '*.mo')))


def clean_message(message):
  """One line of text: accelerators removed, whitespace collapsed."""
  return _SPACE.sub(' ', _ACCELERATOR.sub('', message)).strip()


def catalog_pairs(path):
  """(id, english, translation) of one catalog in msgid order; nothing if it cannot be read."""
  try:
    with open(path, 'rb') as f:
      catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
  except (OSError, UnicodeDecodeError, LookupError, ValueError):
    return
  domain = os.path.basename(path)[:-len('.mo')]
  entries = []
  for key, translation in catalog.items():
    if isinstance(key, tuple):      # plural forms: (msgid, index); keep the singular
      if key[1] != 0:
        continue
      key = key[0]
    if not key or not isinstance(translation, str):
      continue                      # '' is the catalog header
    entries.append((key, translation))
  for key, translation in sorted(entries):
    english = clean_message(key.split('\x04')[-1])      # drop a msgctxt prefix
    german = clean_message(translation)
    if (not english or not german or english == german or len(english) > MAX_CHARS or
        len(german) > MAX_CHARS or not _LETTER.search(english)):
      continue
    yield f'{domain}:{key}', english, german


class GettextCatalogs(stdlib_corpus.LocalBuilder):
  """Translated program messages from the local gettext catalogs (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'English -> German message pairs.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='en_de', description='English -> German messages.'),
  ]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='English -> German message pairs from /usr/share/locale gettext catalogs.',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'inputs': tfds.features.Text(),
            'targets': tfds.features.Text(),
        }),
        supervised_keys=('inputs', 'targets'),
    )

  def _all_examples(self):
    """Every (id, example), read once and shared by both splits; repeated pairs dropped."""
    if getattr(self, '_examples_cache', None) is None:
      lang = self.builder_config.name.split('_')[1]
      seen, examples = set(), []
      for path in catalog_paths(lang):
        for example_id, english, german in catalog_pairs(path):
          if (english, german) not in seen:
            seen.add((english, german))
            examples.append((example_id, {'id': example_id, 'inputs': english,
                                          'targets': german}))
      self._examples_cache = examples
    return self._examples_cache
