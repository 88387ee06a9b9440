"""Progress logging of trials and pre-training tasks to the worker's current stdout."""

from __future__ import annotations

import logging
import sys


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


def configure_logging() -> None:
    logger = logging.getLogger("starsweep")
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
