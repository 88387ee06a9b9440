"""Repairs of a sweep's Tune experiment before it is restored (`python -m sweep resume`).

A driver killed with SIGKILL can leave three things Tune cannot restore from:
- a state file (`experiment_state-*.json`) cut short: set aside, Tune uses the newest
  readable one (`set_aside_unreadable_states`);
- a `tuner.pkl` cut short: set aside and written again from the spec
  (`set_aside_unreadable_tuner`);
- a checkpoint the saved state names but that no longer exists
  (`fill_pruned_checkpoints`). Tune prunes a trial's older checkpoints
  (`keep_checkpoints`) as soon as it registers a newer one, while the experiment
  state that names the newer one reaches storage later (Tune saves it every few
  seconds, in the background); a driver lost in between leaves a state pointing at a
  deleted checkpoint, and Tune fails that trial ("Could not recover from checkpoint as
  it does not exist on storage anymore"). Each missing checkpoint below a trial's
  newest one is written back as a placeholder (metadata only, `PRUNED_KEY`); the
  trainable, restored from a placeholder, resumes from the trial's newest complete
  checkpoint in storage (`trainables.tune_adapter._restored_state`).

Every read and write goes through `trainables.storage` (a local directory or a bucket).
"""

from __future__ import annotations

import json
import logging
import os
import pickle

from sweep.layout import SweepLayout
from trainables import storage

log = logging.getLogger("starsweep.sweep")


def fill_pruned_checkpoints(exp_dir: str) -> list[str]:
    """Write a placeholder for every missing checkpoint index below each trial's newest
    checkpoint in the experiment `exp_dir`; returns the placeholders written."""
    from trainables.tune_adapter import CHECKPOINT_DIR_RE, CHECKPOINT_METADATA, PRUNED_KEY

    written = []
    for name in storage.list_dir(exp_dir):
        trial_dir = storage.join(exp_dir, name)
        if not storage.is_dir(trial_dir):
            continue
        names = storage.list_dir(trial_dir)
        indices = {int(m[1]) for entry in names if (m := CHECKPOINT_DIR_RE.match(entry))}
        for index in sorted(set(range(max(indices, default=-1))) - indices):
            location = storage.join(trial_dir, f"checkpoint_{index:06d}", CHECKPOINT_METADATA)
            storage.write_bytes(location, json.dumps({PRUNED_KEY: True}).encode())
            written.append(location)
    if written:
        log.info("%d pruned checkpoint(s) named by the saved experiment state may be missing: "
                 "placeholders written (trials resume from their newest checkpoint)", len(written))
    return written


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
    returns its new location (the caller writes it again from the spec: it holds only the
    phase's Tuner settings, while the trials are in the experiment state)."""
    location = storage.join(str(exp_dir), SweepLayout.TUNER)
    if not storage.is_file(location):
        return None
    try:
        pickle.loads(storage.read_bytes(location))
        return None
    except Exception as exc:  # noqa: BLE001 - cut anywhere: EOFError, UnpicklingError, ...
        target = storage.join(str(exp_dir), SweepLayout.TUNER + ".unreadable")
        storage.move(location, target)
        log.warning("%s is not readable (%s: cut by a kill?): set aside as %s, written again from the "
                    "spec", location, type(exc).__name__, storage.basename(target))
        return target
