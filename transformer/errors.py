"""The two exception types the entry points turn into one-line errors: ConfigError (bad input,
exit 2) and TrainingError (training cannot go on, exit 1)."""


class ConfigError(ValueError):
  """A bad config value, flag, data path or checkpoint. str(e) is a single line for the user."""


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss became NaN); the message says why and what to try."""
