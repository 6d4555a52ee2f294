"""The one exception type for bad user input: its message is one line naming the thing and the fix."""


class ConfigError(ValueError):
  """A bad config value, flag, data path or checkpoint. str(e) is a single line for the user."""
