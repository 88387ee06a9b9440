"""The one validation pipeline of a sweep before any compute: every check of the spec
against this machine returns `Problem`s (the field, a message naming the bad value and the
fix, a severity); `dry-run` prints them all, `run` and `resume` refuse on any error before
Ray starts (`refuse`: exit code 2 through the error class of the first, every message).

The spec's own fields and the checks across them are validated when it is parsed
(`sweep.spec.parse_spec`, `sweep.checks.cross_check`, the search kind's `problems`): a spec
that fails them is no spec. What this adds is what the spec meets here: the output
directory, the storage, the data and checkpoint files (`trainables.preflight`) and, for a
local Ray, the CPUs and GPUs of this machine (`sweep.checks.local_resources`). No Ray here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sweep.checks import local_resource_errors
from sweep.manifest import check_output_dir
from sweep.spec_models import SpecError, SweepSpec
from trainables.errors import StarsweepError
from trainables.preflight import check_writable, preflight

STORAGE_FIX = "choose a writable directory with free space (--storage or the spec's storage:)"
FIELD_RE = re.compile(r"^([\w.\[\]]+)[:=]")
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing that keeps the sweep from running (an error) or may (a warning)."""

    field: str
    message: str  # names the field, the bad value and the fix
    severity: Severity = "error"
    error: type[StarsweepError] = SpecError

    def __str__(self) -> str:
        return self.message


def _caught(default_field: str, check, *args) -> list[Problem]:
    """A check that raises its problem, as a list of problems."""
    try:
        check(*args)
    except StarsweepError as exc:
        match = FIELD_RE.match(str(exc))
        return [Problem(match.group(1) if match else default_field, str(exc), error=type(exc))]
    return []


def problems(spec: SweepSpec, *, new_sweep: bool, local_ray: bool, files: bool = True,
             num_cpus: float | None = None, resources: Severity = "error") -> list[Problem]:
    """Every problem of `spec` on this machine: the output directory (`new_sweep`), the
    storage, data and checkpoint files (`files`; off with --no-preflight) and, when the
    sweep would start a local Ray (`local_ray`), whether a trial fits it (`resources`: how
    severe a misfit is; a warning for a dry-run of a spec that may be meant for a cluster)."""
    found: list[Problem] = []
    if new_sweep:
        found += _caught("storage", check_output_dir, spec.sweep_dir)
    if files:
        found += _caught("storage", check_writable, spec.sweep_dir, "storage", STORAGE_FIX)
        found += _caught("trial", preflight, spec.shared_trial())
    if local_ray:
        found += [Problem("resources", m, resources) for m in local_resource_errors(spec, num_cpus)]
    return found


def refuse(found: list[Problem], hint: str = "") -> None:
    """Raise (as the first error's class) with every error's message; warnings pass."""
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise errors[0].error("\n".join(p.message for p in errors) + hint)
