"""A sweep's manifest (`sweep.json`: the validated spec, its phases, where MLflow is)
and the checks that keep a new sweep from landing on an old one or on a directory
that is not a sweep. File names come from `sweep.layout.SweepLayout`.

No Ray here: `status`, `export` and `resume` read these before Ray starts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.layout import SweepLayout
from sweep.spec import SpecError, SweepSpec, parse_spec
from trainables import storage
from trainables.errors import StorageError

if TYPE_CHECKING:
    from search_spaces.phase import Phase

MANIFEST = SweepLayout.manifest
MANIFEST_VERSION = 1


def write_manifest(spec: SweepSpec, phases: list[Phase], spec_text: str | None) -> dict[str, Any]:
    layout = spec.layout
    try:
        storage.make_dirs(layout.root)
    except OSError as exc:
        raise StorageError(f"storage: cannot create {layout.root} ({exc.strerror or exc}); choose a "
                           "writable directory with free space (--storage or the spec's storage:)") from None
    data = spec.to_yaml_dict()
    data["storage"] = layout.storage
    if (own := spec.search.own_file(spec.spec_dir)) is not None:  # a custom search's .py file
        storage.write_bytes(layout.custom_search, own.read_bytes())
        data["search"] = spec.search.kept_as(layout.custom_search)
    manifest = {
        "version": MANIFEST_VERSION,
        "name": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": data,
        "spec_dir": spec.spec_dir,
        "phases": [{"name": p.name, "num_trials": p.num_trials, "description": p.description}
                   for p in phases],
        # With an object storage and no server: None, the SQLite store is on the driver's
        # disk (`SweepLayout.local_dir`, copied into the sweep): `tracking_uri_of`.
        "tracking_uri": (spec.mlflow.tracking_uri or (None if layout.is_remote else spec.tracking_uri))
        if spec.mlflow.enabled else None,
        "mlflow_experiment": spec.mlflow_experiment if spec.mlflow.enabled else None,
    }
    storage.write_bytes(layout.manifest, json.dumps(manifest, indent=2).encode())
    if spec_text is not None:
        storage.write_bytes(layout.spec, spec_text.encode())
    return manifest


def read_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    path = SweepLayout(sweep_dir).manifest
    try:
        manifest = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise SpecError(f"{sweep_dir} is not a sweep directory (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
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


def tracking_uri_of(manifest: dict[str, Any], sweep_dir: str) -> str | None:
    """The MLflow tracking URI of a started sweep (None when it runs without MLflow)."""
    if not manifest.get("mlflow_experiment"):
        return manifest.get("tracking_uri")
    return manifest.get("tracking_uri") or SweepLayout(sweep_dir).default_tracking_uri


def check_output_dir(sweep_dir: str | os.PathLike) -> None:
    """Raise SpecError if a new sweep cannot start in `sweep_dir`: a sweep is there
    already, or something that is not a sweep (a file, another program's directory)."""
    layout = SweepLayout(sweep_dir)
    root, name = layout.root, layout.name
    if storage.exists(layout.manifest):
        raise SpecError(
            f"name: a sweep {name!r} already exists in {root}; continue it with "
            f"`python -m sweep resume {root}` (or `run --if-exists resume`), see it with "
            f"`python -m sweep status {root}`, or start another with `run --if-exists new` "
            "or another name"
        )
    if storage.is_file(root):
        raise SpecError(f"name: {root} exists and is a file, not a sweep directory; "
                        "choose another name or storage")
    foreign = sorted(
        n for n in storage.list_dir(root)
        if n not in SweepLayout.entries() and not SweepLayout.is_phase(storage.join(root, n))
        and not (n.startswith(".") and n.endswith(".tmp"))  # an interrupted write
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise SpecError(
            f"name: {root} exists and is not a starsweep sweep (no {MANIFEST}; holds "
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
    local = storage.local_path(str(sweep_dir))
    root = str(Path(local).resolve()) if local is not None else storage.normalize(str(sweep_dir))
    data["storage"] = storage.parent(root)  # the sweep may have moved
    return parse_spec(data, source=storage.join(root, MANIFEST), spec_dir=manifest.get("spec_dir", "."))


def changed_fields(started: SweepSpec, wanted: SweepSpec) -> list[str]:
    """Top-level spec fields that differ between a started sweep and a spec (its storage,
    and the path of a custom search, which the manifest points at its own copy, aside)."""

    def comparable(spec: SweepSpec) -> dict[str, Any]:
        data = spec.to_yaml_dict()
        data["storage"] = None
        data["search"] = spec.search.comparable()
        data.pop("budget", None)  # a resume may continue under another limit
        return data

    a, b = comparable(started), comparable(wanted)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def find_sweep_dir(name_or_path: str, storage_location: str = "./runs") -> str:
    """A sweep directory (a path or URI) from a name (under `storage_location`) or a path or
    URI (a sweep directory or one of its phases)."""
    candidates = [name_or_path, storage.join(storage_location, name_or_path)]
    for cand in candidates:
        try:
            if storage.exists(storage.join(cand, MANIFEST)):
                return _resolved(cand)
            parent = storage.parent(storage.normalize(cand))
            if SweepLayout.is_phase(cand) and storage.exists(storage.join(parent, MANIFEST)):
                return _resolved(parent)
        except storage.StorageLocationError as exc:
            raise SpecError(f"sweep {cand!r} cannot be reached: {exc}") from None
    raise SpecError(
        f"no sweep {name_or_path!r}: neither {name_or_path!r} nor "
        f"{storage.join(storage_location, name_or_path)!r} holds a {MANIFEST} (give the sweep name "
        "with --storage, or the sweep directory or URI)"
    )


def _resolved(location: str) -> str:
    local = storage.local_path(location)
    return str(Path(local).resolve()) if local is not None else storage.normalize(location)
