"""Errors that porelab reports as one sentence: exit code 2 for user mistakes, 3 for a failed cluster or disk."""

from __future__ import annotations

__all__ = ["UserError", "ClusterError"]


class UserError(Exception):
    """A mistake in what the user gave us: a path, a value, a job file.

    The command line prints ``str(error)`` alone (no traceback) and exits with
    code 2. The message is one sentence naming the file or option, the value
    that was given, and what was expected.
    """

    exit_code: int = 2


class ClusterError(UserError):
    """A cluster or disk the run depends on failed under it: a scheduler gone, a disk full.

    Not the user's mistake, but reported the same way: one sentence saying
    what failed and what to do (the run resumes from its done markers), no
    traceback, exit code 3.
    """

    exit_code: int = 3
