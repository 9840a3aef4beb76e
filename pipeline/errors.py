"""Errors that porelab reports to users as one sentence and exit code 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user gave us: a path, a value, a job file.

    The command line prints ``str(error)`` alone (no traceback) and exits with
    code 2. The message is one sentence naming the file or option, the value
    that was given, and what was expected.
    """

    exit_code: int = 2
