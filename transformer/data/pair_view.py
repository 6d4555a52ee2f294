"""A source seen as (inputs, targets) pairs made from another source's examples.

The base of glue_source.TextToText (`data.text_to_text`) and prefix_pairs.PrefixPairs
(`data.prefix_pairs`): it has sources.Source's interface, gives only the roles 'inputs' and
'targets', and reads its inner source by the roles `inner_roles()` names, so the inner source's
own checks (missing fields, bad labels) name its keys, files and lines. A subclass says which
config key it is (`setting`, `unset`: the one-line error's name and way out) and makes the pairs
(`dataset`).
"""

from transformer.errors import ConfigError


class PairView:
  """sources.Source's interface over `inner`, giving 'inputs' and 'targets' only."""

  ROLES = ('inputs', 'targets')
  setting = unset = ''    # e.g. '`data.prefix_pairs=True`', 'set data.prefix_pairs=False'

  def __init__(self, inner):
    self.inner = inner
    self.name = inner.name
    self.config = getattr(inner, 'config', None)

  def inner_roles(self):
    """The roles the inner source is read by."""
    raise NotImplementedError

  def field(self, role):
    return role if role in self.ROLES else None

  def available_fields(self):
    return list(self.ROLES)

  def require(self, roles):
    """ConfigError for a role other than inputs/targets; then the inner source's checks."""
    for role in roles:
      if role not in self.ROLES:
        raise ConfigError(f'{self.setting}: the source gives only inputs and targets, not '
                          f'{role!r}; use objective=seq2seq or {self.unset}')
    self.inner.require(self.inner_roles())

  def tfds_split(self, split):
    return self.inner.tfds_split(split)
