"""Errors a user can cause or fix. The CLI prints them as one line and exits with `exit_code`."""


class UserError(Exception):
    """Bad input, bad option or unusable environment: one readable line, exit code 2."""

    exit_code = 2


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""
