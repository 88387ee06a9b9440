"""A sweep's manifest (`sweep.json`: the validated spec, its phases, where MLflow is)
and the checks that keep a new sweep from landing on an old one or on a directory
that is not a sweep. File names come from `sweep.layout.SweepLayout`.

No Ray here: `status`, `export` and `resume` read these before Ray starts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces.kinds import CustomSearch
from sweep.layout import SweepLayout
from sweep.spec import SpecError, SweepSpec, parse_spec
from trainables.memo import atomic_write_bytes

if TYPE_CHECKING:
    from sweep.phases import Phase

MANIFEST = SweepLayout.manifest
MANIFEST_VERSION = 1


def write_manifest(spec: SweepSpec, phases: list[Phase], spec_text: str | None) -> dict[str, Any]:
    layout = spec.layout
    sweep_dir = Path(layout.root)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from trainables.errors import StorageError

        raise StorageError(f"storage: cannot create {sweep_dir} ({exc.strerror}); choose a writable "
                           "directory with free space (--storage or the spec's storage:)") from None
    data = spec.to_yaml_dict()
    data["storage"] = layout.storage
    if isinstance(spec.search, CustomSearch):
        shutil.copyfile(spec.custom_search_file(), layout.custom_search)
        data["search"]["path"] = layout.custom_search
    manifest = {
        "version": MANIFEST_VERSION,
        "name": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": data,
        "spec_dir": spec.spec_dir,
        "phases": [{"name": p.name, "num_trials": p.num_trials, "description": p.description}
                   for p in phases],
        "tracking_uri": spec.tracking_uri,
        "mlflow_experiment": spec.mlflow_experiment if spec.mlflow.enabled else None,
    }
    atomic_write_bytes(Path(layout.manifest), json.dumps(manifest, indent=2).encode())
    if spec_text is not None:
        atomic_write_bytes(Path(layout.spec), spec_text.encode())
    return manifest


def read_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(SweepLayout(sweep_dir).manifest)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{sweep_dir} is not a sweep directory (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}; it is not a sweep this version can continue "
                        "(start a new sweep with another name or storage)") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION or \
            not isinstance(manifest.get("spec"), dict):
        version = manifest.get("version") if isinstance(manifest, dict) else None
        raise SpecError(
            f"{path}: not a sweep manifest of this starsweep version (version {version!r}, expected "
            f"{MANIFEST_VERSION}); start a new sweep with another name or storage"
        )
    return manifest


def check_output_dir(sweep_dir: str | os.PathLike) -> None:
    """Raise SpecError if a new sweep cannot start in `sweep_dir`: a sweep is there
    already, or something that is not a sweep (a file, another program's directory)."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / MANIFEST).exists():
        raise SpecError(
            f"name: a sweep {sweep_dir.name!r} already exists in {sweep_dir}; continue it with "
            f"`python -m sweep resume {sweep_dir}` (or `run --if-exists resume`), see it with "
            f"`python -m sweep status {sweep_dir}`, or start another with `run --if-exists new` "
            "or another name"
        )
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SpecError(f"name: {sweep_dir} exists and is a file, not a sweep directory; "
                        "choose another name or storage")
    if sweep_dir.is_dir():
        foreign = sorted(
            p.name for p in sweep_dir.iterdir()
            if p.name not in SweepLayout.entries() and not SweepLayout.is_phase(p)
            and not (p.name.startswith(".") and p.name.endswith(".tmp"))  # an interrupted write
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise SpecError(
                f"name: {sweep_dir} exists and is not a starsweep sweep (no {MANIFEST}; holds "
                f"{shown}); choose another name or storage, or remove that directory"
            )


def sweep_dir_taken(sweep_dir: str | os.PathLike) -> bool:
    try:
        check_output_dir(sweep_dir)
    except SpecError:
        return True
    return False


def spec_from_manifest(sweep_dir: str | os.PathLike, manifest: dict[str, Any]) -> SweepSpec:
    data = dict(manifest["spec"])
    data["storage"] = str(Path(sweep_dir).resolve().parent)  # the sweep may have moved
    return parse_spec(data, source=str(Path(sweep_dir) / MANIFEST), spec_dir=manifest.get("spec_dir", "."))


def changed_fields(started: SweepSpec, wanted: SweepSpec) -> list[str]:
    """Top-level spec fields that differ between a started sweep and a spec (its storage,
    and the path of a custom search, which the manifest points at its own copy, aside)."""

    def comparable(spec: SweepSpec) -> dict[str, Any]:
        data = spec.to_yaml_dict()
        data["storage"] = None
        if isinstance(spec.search, CustomSearch):
            data["search"].pop("path")
        return data

    a, b = comparable(started), comparable(wanted)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def find_sweep_dir(name_or_path: str, storage: str = "./runs") -> Path:
    """A sweep directory from a name (under `storage`) or a path (sweep dir or one of its phases)."""
    candidates = [Path(name_or_path), Path(storage) / name_or_path]
    for cand in candidates:
        cand = cand.expanduser()
        if (cand / MANIFEST).is_file():
            return cand.resolve()
        if SweepLayout.is_phase(cand) and (cand.parent / MANIFEST).is_file():
            return cand.parent.resolve()
    raise SpecError(
        f"no sweep {name_or_path!r}: neither {name_or_path!r} nor {str(Path(storage) / name_or_path)!r} "
        f"holds a {MANIFEST} (give the sweep name with --storage, or the sweep directory)"
    )
