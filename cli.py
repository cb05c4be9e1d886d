"""Command-line plumbing shared by the scripts: user errors, config files, the W&B agent's arguments."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, record, field or flag).

    Scripts turn it into one line on stderr and exit code 2, without a traceback. The message names
    the file, record and field and says what would be valid.
    """
