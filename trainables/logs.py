"""Progress logging of trials and pre-training tasks.

Outside a trial (pre-training tasks, `python -m trainables`) every line goes to the
worker's current stdout. Inside a trial (`trial_logging`) every line goes to the
trial's own log file (`trial.log` in its trial directory), and the worker's stdout,
which Ray forwards to the sweep's console, gets only warnings unless `verbose`: the
console keeps Tune's status table readable.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: The file of a trial's log in its trial directory.
TRIAL_LOG = "trial.log"
_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is *now*: Tune swaps it for a per-trial log
    file and closes it when the trial ends, so a handler that kept the old
    stream would fail on the next trial in the same worker."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def _logger() -> logging.Logger:
    return logging.getLogger("starsweep")


def configure_logging() -> _CurrentStdout:
    """The `starsweep` logger writing INFO and above to the current stdout; its handler."""
    logger = _logger()
    for handler in logger.handlers:
        if isinstance(handler, _CurrentStdout):
            return handler
    handler = _CurrentStdout()
    handler.setFormatter(_FORMAT)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


@contextmanager
def trial_logging(path: str, verbose: bool = False) -> Iterator[None]:
    """While a trial runs: every line to `path`, only warnings to stdout unless `verbose`."""
    console = configure_logging()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(_FORMAT)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    _logger().addHandler(to_file)
    try:
        yield
    finally:
        _logger().removeHandler(to_file)
        to_file.close()
        console.setLevel(logging.INFO)
