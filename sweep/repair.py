"""Repairs of a sweep's Tune experiment before it is restored (`python -m sweep resume`).

A driver killed with SIGKILL can leave two things Tune cannot restore from:
- a state file (`experiment_state-*.json`) cut short: set aside, Tune uses the newest
  readable one (`set_aside_unreadable_states`);
- a `tuner.pkl` cut short: set aside (`set_aside_unreadable_tuner`); the phase then
  starts again and its trials continue from their ledgers.
Nothing else of Tune's is needed: each trial resumes from its own ledger
(`trainables.ledger`), whatever Tune had registered, pruned or synced. Only `resume`
calls these (the read-only verbs never rename anything). Every read and write goes
through `trainables.storage` (a local directory or a bucket).
"""

from __future__ import annotations

import json
import logging
import os
import pickle

from sweep.layout import SweepLayout
from trainables import storage

log = logging.getLogger("starsweep.sweep")


def set_aside_unreadable_states(exp_dir: str | os.PathLike) -> list[str]:
    """Rename Tune state files that are not valid JSON (a driver killed while Tune
    wrote one leaves it empty or cut) to `*.unreadable`, so that restoring and
    reading the experiment use the newest readable state instead of failing or
    silently finding no trials. Returns the files set aside."""
    moved = []
    for location in SweepLayout.states_in(str(exp_dir)):
        try:
            json.loads(storage.read_bytes(location))
        except (OSError, UnicodeDecodeError, ValueError):
            target = storage.join(storage.parent(location), storage.basename(location) + ".unreadable")
            storage.move(location, target)
            log.warning("%s is not readable (cut by a crash?): set aside as %s", location,
                        storage.basename(target))
            moved.append(target)
    return moved


def set_aside_unreadable_tuner(exp_dir: str) -> str | None:
    """Rename a `tuner.pkl` a kill cut short (it does not unpickle) to `tuner.pkl.unreadable`;
    returns its new location (the phase then starts again: its trials find their ledgers)."""
    location = storage.join(str(exp_dir), SweepLayout.TUNER)
    if not storage.is_file(location):
        return None
    try:
        pickle.loads(storage.read_bytes(location))
        return None
    except Exception as exc:  # noqa: BLE001 - cut anywhere: EOFError, UnpicklingError, ...
        target = storage.join(str(exp_dir), SweepLayout.TUNER + ".unreadable")
        storage.move(location, target)
        log.warning("%s is not readable (%s: cut by a kill?): set aside as %s; the phase starts again "
                    "and its trials continue from their ledgers", location, type(exc).__name__,
                    storage.basename(target))
        return target
