"""The one exception type for problems a user can fix."""


class GanlabError(Exception):
    """A problem the user can fix (missing dataset, bad checkpoint, wrong option).

    The CLI prints the message as a single line and exits with status 1, no traceback,
    so the message must say what went wrong and what to do about it.
    """
