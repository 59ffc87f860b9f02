"""User-facing errors: each names the culprit (file, key, value) and what to do.

The CLI turns any `UserError` into one message and exit code 2.
"""


class UserError(ValueError):
    """Bad input from the user: config, data, checkpoint, address."""


class ConfigError(UserError):
    """A study or trial config that cannot run as written."""


class DataError(UserError):
    """A dataset, split file or image that cannot be read as asked."""
