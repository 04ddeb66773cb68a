"""A time limit on one component, so that a plugin stuck in a loop or a network call cannot hang a report.

When the limit passes, SIGALRM raises ``ComponentTimeout`` in the main thread: a ``BaseException``, so a
plugin's ``except Exception`` does not swallow it. It is raised again every second until the component gives
up. One that catches it every time still cannot keep the command alive: a grace period after the limit (as
long as the limit itself, at most ``GRACE`` seconds), ``abandon()`` runs (it removes the unfinished report) and
the process exits with status 1. Where there is no SIGALRM (Windows) or outside the main thread, components run
without a limit.
"""
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

GRACE = 30.0  # at most this many seconds a component has to stop after its limit before the command ends


class ComponentTimeout(BaseException):
    """Raised in a component that ran past ``--component-timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float | None, abandon: Callable[[], None]) -> Iterator[None]:
    """Run the block with a limit of ``seconds`` (None or 0: none)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[float] = []  # when the first alarm was handled: the grace period runs from then

    def on_alarm(signum, frame):
        first.append(time.monotonic())
        if first[-1] - first[0] > min(GRACE, seconds):
            abandon()
            os._exit(1)
        raise ComponentTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
