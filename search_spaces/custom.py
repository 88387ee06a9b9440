"""User-defined search spaces, loaded from an explicit Python file.

A spec with

    search:
      kind: custom
      path: my_space.py          # relative to the spec file's directory
      function: build_search     # the default
      num_samples: 20
      options: {grace_period: 2} # free-form, available as spec.search.options

imports *that file only* (never a module name looked up on sys.path) and calls

    build_search(base: dict, spec) -> (param_space, search_alg, scheduler)

`base` is the shared trial config of the spec (a `TrialBase` dict, with the
sweep's cache directories set) and `spec` the validated sweep spec;
`param_space` must produce valid TrialConfig dicts (so it usually starts with
`**base`); `search_alg` and `scheduler` may be None.
Metric and mode are set on the search algorithm / scheduler themselves. See
`examples/custom_space.py` for a complete file.

The module is registered for pickling by value, so the experiment's
`tuner.pkl` keeps the user's objects and `python -m sweep resume` works even
when the file has moved (the file is also copied into the sweep directory).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from trainables.errors import ConfigError


class CustomSearchError(ConfigError):
    """The custom search file or function cannot be used (exit code 2, no traceback)."""


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file by path under a private module name."""
    path = Path(path).resolve()
    if not path.is_file():
        raise CustomSearchError(f"search.path: no such Python file {str(path)!r}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"starsweep_custom_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CustomSearchError(f"search.path: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report, do not crash with a traceback
        del sys.modules[name]
        raise CustomSearchError(
            f"search.path: importing {str(path)!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(module)
    return module


def load_search_function(path: str | Path, function: str):
    module = load_module(path)
    fn = getattr(module, function, None)
    if not callable(fn):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise CustomSearchError(
            f"search.function: {str(path)!r} has no function {function!r} "
            f"(callables found: {', '.join(sorted(found)) or 'none'})"
        )
    return fn


def build_custom(path: str | Path, function: str, base: dict[str, Any], spec) -> tuple:
    """Call the user's function and check what it returns."""
    fn = load_search_function(path, function)
    try:
        out = fn(base, spec)
    except Exception as exc:
        raise CustomSearchError(
            f"search.function: {function}() in {str(path)!r} raised {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[0], dict)):
        raise CustomSearchError(
            f"search.function: {function}() must return (param_space: dict, search_alg or None, "
            f"scheduler or None), got {type(out).__name__}"
        )
    return out
