"""User-facing errors. Anything a user can fix by changing a file, a config key or a request
is raised as a subclass of :class:`UserError`; the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """A mistake in the user's input. ``str(err)`` is a single line that names what to fix."""

    exit_code = 2


class ConfigError(UserError):
    """Unknown config key, wrong type or an impossible combination of settings."""


class DataError(UserError):
    """An input file or frame that cannot be used (unreadable, missing a column, too short, ...)."""
