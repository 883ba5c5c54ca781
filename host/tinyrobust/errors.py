class UserError(Exception):
    """A problem the user can fix; the CLI prints its message as one sentence, without a traceback."""
