"""Shared test set-up: one Ray session per module.

The packages are installed (`pip install -e .`, done by `make setup`), so tests, their
subprocesses and Ray workers import them without any path set-up.
"""

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance with 2 CPUs, shared by the tests of one module (start-up costs ~5-10 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
