"""The error a command raises for bad user input (`vtp` prints it without a traceback, exit 2).

It lives here, below the command front ends in `commands/`, because the data tools' own
subcommands (synth, clean, subset, shard, merge) raise it too.
"""


class UsageError(Exception):
    """Raised by a command for bad user input; printed without a traceback, exit status 2."""


class InputError(ValueError):
    """An input as a whole is unusable: unknown format, unparseable, missing columns, no tars
    (the data tools turn it into a UsageError)."""
