"""The trial config as the driver receives it: Tune's param space and `Trial.config` carry
a plain dict; the driver validates each trial's once (`TrialConfigs.of`) and its callbacks
see the `TrialConfig`, the trial's key and its ledger. The trial validates its own copy
where it starts (`trainables.tune_adapter`)."""

from __future__ import annotations

from dataclasses import dataclass

from trainables import storage
from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.ledger import TrialLedger, config_key, trial_key


@dataclass(frozen=True)
class DriverTrial:
    """A trial as the driver's callbacks see it."""

    config: TrialConfig | None  # None: a config the trial itself rejects (it fails with the message)
    key: str
    ledger_dir: str | None

    @property
    def ledger(self) -> TrialLedger | None:
        """The trial's ledger (None without `ledger_dir`: not a sweep's trial)."""
        return TrialLedger(storage.join(self.ledger_dir, self.key)) if self.ledger_dir else None


class TrialConfigs:
    """The configs of the trials of one driver, each validated once (by Tune's trial id)."""

    def __init__(self) -> None:
        self._seen: dict[str, DriverTrial] = {}

    def of(self, trial) -> DriverTrial:
        got = self._seen.get(trial.trial_id)
        if got is None:
            try:
                cfg = TrialConfig.from_dict(trial.config)
                got = DriverTrial(cfg, config_key(cfg), cfg.ledger_dir)
            except ConfigError:
                got = DriverTrial(None, trial_key(trial.config), trial.config.get("ledger_dir"))
            self._seen[trial.trial_id] = got
        return got
