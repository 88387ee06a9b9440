"""Run at start-up by every Python process with tests/gate on PYTHONPATH: installs
tests/hold_gate.py's gate when its environment variable is set (a no-op otherwise)."""

import os

if os.environ.get("STARSWEEP_HOLD_DIR"):
    import hold_gate

    hold_gate.install()
