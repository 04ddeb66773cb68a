"""The exception types for problems a user can fix, and for a command stopped by a signal."""


class GanlabError(Exception):
    """A problem the user can fix (missing dataset, bad checkpoint, wrong option). The CLI prints the message as one
    line, no traceback, and exits with status 1: it must say what went wrong and what to do about it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so that what a command was writing is cleaned up on the way out (as for Ctrl-C);
    the CLI then exits with 143."""


def raise_terminated(signum, frame):
    """A SIGTERM handler: ``signal.signal(signal.SIGTERM, raise_terminated)``."""
    raise Terminated()


def a(noun: str) -> str:
    """``noun`` with its indefinite article: "an int", "a float"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def count(n: int, noun: str) -> str:
    """"1 component", "3 components"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
