"""Exit codes shared by every `study` command, and the one way a user error ends one."""
from __future__ import annotations

import sys

import click

from trainables.errors import UserError

EXIT_SOME_FAILED = 1  # the job ran; some trials or videos failed (each named)
EXIT_USER_ERROR = 2  # bad input: config, data, checkpoint, address; nothing was written
EXIT_INTERRUPTED = 130  # Ctrl+C: what finished is kept, the resume command is printed


def fail(exc: UserError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_USER_ERROR)
