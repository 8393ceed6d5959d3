"""User-facing errors.

A :class:`TandemError` is a mistake the user can fix (bad input, a missing column, a corrupt checkpoint). The CLI
prints its one-line message and exits with code 2, never a traceback. Messages name the rule, the value and the fix.
"""


class TandemError(Exception):
    """An error caused by user input; the CLI reports it in one line and exits with code 2."""

    exit_code = 2
