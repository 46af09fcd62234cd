"""The one exception family the CLI turns into a clear one-line message (exit code 2)."""


class UserError(Exception):
    """Something the user can fix: bad input file, unknown name, missing model. Say what and how."""
