"""Errors a user can cause. The CLI prints their message as one line and exits with status 2."""


class UserError(Exception):
    """A problem the user can fix: bad patch, program, trace file, config or endpoint.

    The message names what is wrong and what to do, in one line.
    """
