"""Shared test set-up: one Ray session per module; the longest modules collected first.

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


#: The modules that take longest (measured on the 2-core CI machine, `make test` at 1dada41,
#: longest first), collected first so that `make test` (`pytest -n 2 --dist loadfile
#: --no-loadscope-reorder`: xdist would otherwise start the modules with the most tests
#: first) starts them first: longest processing time first, so the two workers finish
#: together instead of one running a long module alone at the end (measured: soak last,
#: 100 s alone). Modules not named here keep their order, after these.
LONGEST_FIRST = [
    "test_bench_smoke", "test_sweep_run", "test_sweep_resume", "test_faults", "test_soak",
    "test_paper_spec", "test_parallel_cycles", "test_object_storage", "test_tracking",
    "test_gpu_scheduling", "test_analysis_report", "test_coordinator", "test_checkpoint_layouts",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))
